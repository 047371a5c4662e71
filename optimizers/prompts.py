"""Rewriting the data-scientist agent's instructions: GEPA on the inner loop, and one-shot rewrites.

`optimize_prompt("challenger")` runs DSPy's GEPA on a program that is the inner loop on
one seed, where only the challenger's instructions can change. The metric is the
loop's verdict on the seed (accepted, or why not), and its textual feedback is the
loop's own rejection reasons and advice, which GEPA's reflection step turns into new
instructions. The solvers, the verifier's checks and the Exact Match rule are not
part of the optimized program: an optimizer that could weaken the weak solver or the
checks would hack the acceptance rule instead of writing better questions.

`optimize_prompt("verifier")` tunes the verifier's LLM judge (the part after the
programmatic checks, used when a recipe sets `llm_judge`) on labelled cases built from
accepted items: the item's own answer, stated by its evidence, must be accepted;
another item's answer, which the evidence does not state, rejected.

Proposals come from the optimizer role through `propose_instructions`, a grammar-
constrained DSPy signature that small local models follow; the study's per-trial
rewrite uses the same function. The best instructions, when they beat the starting
ones on the validation cases, become a new version of `autodata.ROLE` in the
MLflow prompt registry, with a commit message saying what changed and the score.
GEPA's state lives in a folder under AUTODATA_HOME named by the run's inputs, so an
interrupted run resumes there.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from collections.abc import Iterable
from itertools import islice
from pathlib import Path
from typing import Annotated

import mlflow
from pydantic import StringConstraints

from autodata.errors import AutodataError
from autodata.llm import LLMSession
from autodata.llm.dspy_engine import dspy, our_errors
from autodata.pipeline import FEEDBACK, SeedProcessor
from autodata.recipe import Recipe
from autodata.roles import SchemaJSONAdapter
from autodata.roles.verifier import JudgeTrajectory
from autodata.search.protocol import Retriever
from autodata.seeds import SeedItem
from autodata.settings import Settings
from autodata.trajectory import render_information
from autodata.answers import sub_exact_match
from optimizers import tracking

logger = logging.getLogger(__name__)

# Partial credit: a question that was well-formed and grounded but missed the solvers' gap
# still beats one that broke the rules (leak, unsupported, invalid, duplicate).
REACHED_SOLVERS = ("too_easy", "too_hard", "gap", "unverified")
REACHED_SOLVERS_SCORE = 0.3
CHALLENGER_ONLY = {"keep": 0.0, "rephrase": 0.7, "multi_hop": 0.3}  # every round uses the challenger's instructions


class RewriteInstructions(dspy.Signature):
    """Improve the instructions of an agent, using the feedback on what its recent outputs got wrong.
    Keep every rule; make the instructions clearer about what failed."""

    agent: str = dspy.InputField(desc="what the agent does")
    current_instructions: str = dspy.InputField(desc="the current instructions")
    feedback: str = dspy.InputField(desc="what recent outputs got wrong")
    new_instructions: Annotated[str, StringConstraints(pattern=r'^[^{}"\\\n]{80,900}$')] = dspy.OutputField()
    change_summary: Annotated[str, StringConstraints(pattern=r'^[^{}"\\\n]{5,160}$')] = dspy.OutputField()


# What each optimizable role does, and a word its instructions must keep using.
AGENTS = {
    "challenger": ("writes one grounded training question and its answer from retrieved passages", "question"),
    "verifier": ("judges whether retrieved evidence states a given answer to a question", "answer"),
}
OPTIMIZED_ROLES = tuple(AGENTS)


def propose_instructions(llms: LLMSession, role: str, current: str, feedback: str, *,
                         rollout_id: str) -> tuple[str, str] | None:  # fmt: skip
    """(new instructions, what changed) from the optimizer role, or None when its proposal is unusable."""
    job, keyword = AGENTS[role]
    with our_errors(), dspy.context(lm=llms.dspy_lm("optimizer"), adapter=SchemaJSONAdapter()):
        try:
            proposal = dspy.Predict(RewriteInstructions)(agent=job, current_instructions=current, feedback=feedback,
                                                         config={"rollout_id": rollout_id})  # fmt: skip
        except Exception as err:  # a failed proposal costs one step, not the run
            logger.warning("instruction proposal skipped: %s", err)
            return None
    text = proposal.new_instructions.strip()
    if keyword not in text.lower():
        logger.info("instruction proposal rejected: it no longer mentions %r", keyword)
        return None
    return text, proposal.change_summary.strip()


def seed_feedback(result_rejected: list[dict], accepted: bool) -> tuple[float, str]:
    """The inner loop's verdict on one seed as (score, feedback text)."""
    if accepted:
        return 1.0, "Accepted: the strong solver found and supported the answer by searching, the weak one did not."
    if not result_rejected:
        return 0.0, "No question was produced."
    lines = []
    for row in result_rejected:
        question = f"question {row['question']!r}" if row["question"] else "no question"
        lines.append(f"{question} rejected as {row['reason']} ({row['detail']}). {FEEDBACK.get(row['reason'], '')}")
    reached = any(row["reason"] in REACHED_SOLVERS for row in result_rejected)
    return (REACHED_SOLVERS_SCORE if reached else 0.0), " ".join(lines)


class _Shared:
    """Kept by reference when GEPA deep-copies the program (the retriever and endpoints are not copyable)."""

    def __init__(self, value):
        self.value = value

    def __deepcopy__(self, memo):
        return self


class InnerLoopProgram(dspy.Module):
    """The inner loop on one seed; the challenger is its only predictor, so its only optimizable text."""

    def __init__(self, processor: SeedProcessor):
        super().__init__()
        self.challenger = copy.deepcopy(processor.challenger)
        self.shared = _Shared(processor)

    def forward(self, seed_id: str, question: str, golden_answers: list[str]) -> dspy.Prediction:
        processor = copy.copy(self.shared.value)  # shallow: this program's challenger, shared everything else
        processor.challenger = self.challenger
        result = processor.process(SeedItem(id=seed_id, question=question, golden_answers=list(golden_answers)))
        return dspy.Prediction(accepted=bool(result.accepted), rejected=result.rejected)


def inner_loop_metric(gold, pred, trace=None, pred_name=None, pred_trace=None) -> dspy.Prediction:
    score, feedback = seed_feedback(pred.rejected, pred.accepted)
    return dspy.Prediction(score=score, feedback=feedback)


class JudgeProgram(dspy.Module):
    """The verifier's LLM judge alone; the programmatic checks around it are not part of it."""

    def __init__(self, instructions: str, llms: LLMSession):
        super().__init__()
        self.judge = dspy.Predict(JudgeTrajectory.with_instructions(instructions))
        self.shared = _Shared(llms)

    def forward(self, question: str, answer: str, evidence: str) -> dspy.Prediction:
        with dspy.context(lm=self.shared.value.dspy_lm("judge"), adapter=SchemaJSONAdapter()):
            return self.judge(question=question, answer=answer, evidence=evidence)


def judge_examples(items: list[dict]) -> list[dspy.Example]:
    """Labelled cases from accepted items: each item's own answer, which its evidence states
    (accept), and another item's answer, which it does not (reject)."""
    examples = []
    for index, item in enumerate(items):
        evidence = "\n".join(render_information(s["observation"]) for s in item["trajectory"]["steps"] if s["kind"] == "search")
        others = items[index + 1 :] + items[:index]
        wrong = next((o["answer"] for o in others if not sub_exact_match(evidence, [o["answer"]])), None)
        for answer, label in ((item["answer"], "accept"), (wrong, "reject")):
            if answer is not None:
                examples.append(dspy.Example(question=item["question"], answer=answer, evidence=evidence, label=label)
                                .with_inputs("question", "answer", "evidence"))  # fmt: skip
    return examples


def judge_metric(gold, pred, trace=None, pred_name=None, pred_trace=None) -> dspy.Prediction:
    states = "states" if gold.label == "accept" else "does not state"
    if pred.verdict == gold.label:
        return dspy.Prediction(score=1.0, feedback=f"Right: the evidence {states} {gold.answer!r}.")
    return dspy.Prediction(score=0.0, feedback=f"Wrong: the evidence {states} {gold.answer!r}, so the verdict must "
                                               f"be {gold.label}.")  # fmt: skip


@dataclass(frozen=True)
class PromptOptimization:
    budget: int = 24  # metric calls: each runs the inner loop on one seed
    train_size: int = 6
    val_size: int = 4
    minibatch: int = 3
    num_threads: int = 2


def optimize_prompt(role: str, *, settings: Settings, llms: LLMSession, seeds: Iterable[SeedItem] = (),
                    items: list[dict] = (), retriever: Retriever | None = None,
                    options: PromptOptimization = PromptOptimization(), base: Recipe | None = None) -> dict:  # fmt: skip
    """GEPA on `role`'s instructions (see the module docstring); returns a summary dict.

    The challenger learns from the inner loop run on `seeds` (with `retriever`); the
    verifier's judge from labelled cases made of accepted `items` of a synthesis run.
    Every call goes through `llms`, the caller's session.
    """
    if role not in OPTIMIZED_ROLES:
        raise AutodataError(f"Role {role!r} cannot be optimized: choose one of {', '.join(OPTIMIZED_ROLES)}. "
                            "The solvers' prompts and the acceptance checks are never optimized.")  # fmt: skip
    experiment_id = tracking.setup(settings)
    tracking.ensure_seed_prompts()
    start_version = tracking.latest_prompt_version(role) or 1
    start_text = tracking.load_prompt_version(role, start_version)
    need = options.train_size + options.val_size

    if role == "challenger":
        base = base or Recipe()
        # Every round goes through the challenger: the "keep" strategy would not use its instructions.
        recipe = base.with_changes(instructions={**base.instructions, role: start_text},
                                   strategies={"keep": 0.0, "rephrase": 0.7, "multi_hop": 0.3})  # fmt: skip
        processor = SeedProcessor(recipe, retriever, llms)
        # the first seeds whose own search reaches an answer (the others would cost no LLM call and teach nothing)
        usable = list(islice((s for s in seeds if processor.evidence_pack(s)[1] is not None), need))
        examples = [dspy.Example(seed_id=s.id, question=s.question, golden_answers=s.golden_answers)
                    .with_inputs("seed_id", "question", "golden_answers") for s in usable]  # fmt: skip
        program, metric = InnerLoopProgram(processor), inner_loop_metric
        inputs = [recipe.content_hash, [s.id for s in usable]]
        shortage = f"Only {len(usable)} of the seeds have evidence in their own search"
    else:
        examples = judge_examples(list(items))[:need]
        program, metric, inputs = JudgeProgram(start_text, llms), judge_metric, [ex.toDict() for ex in examples]
        shortage = f"The accepted items make only {len(examples)} labelled cases"
    if len(examples) < need:
        raise AutodataError(f"{shortage}; prompt optimization needs {need} (train {options.train_size} + val "
                            f"{options.val_size}). Pass more {'seeds' if role == 'challenger' else 'items'}.")  # fmt: skip
    key = hashlib.sha256(json.dumps([role, start_text, inputs, options.__dict__]).encode()).hexdigest()[:16]
    log_dir = settings.home_dir / "prompt-optimization" / role / key
    summaries: dict[str, str] = {}

    def proposer(candidate: dict[str, str], reflective_dataset: dict, components_to_update: list[str]) -> dict:
        new = {}
        for name in components_to_update:
            records = reflective_dataset.get(name, [])
            feedback = " | ".join(_describe(r) for r in records[:5]) or "No feedback."
            # a new sample for each (instructions, feedback): the same pair replays from the LLM cache
            rollout_id = f"gepa:{key}:{hashlib.sha256((candidate[name] + feedback).encode()).hexdigest()[:12]}"
            proposal = propose_instructions(llms, role, candidate[name], feedback, rollout_id=rollout_id)
            if proposal is not None:
                new[name], summaries[proposal[0]] = proposal
        return new

    optimizer = dspy.GEPA(
        metric=metric, max_metric_calls=options.budget, reflection_minibatch_size=options.minibatch,
        instruction_proposer=proposer, reflection_lm=llms.dspy_lm("optimizer"), num_threads=options.num_threads,
        track_stats=True, log_dir=str(log_dir), use_merge=False, seed=0, warn_on_score_mismatch=False,
    )  # fmt: skip
    with mlflow.start_run(run_name=f"prompts optimize {role}", experiment_id=experiment_id,
                          tags={"autodata.kind": "prompt-optimization", "autodata.role": role}):  # fmt: skip
        mlflow.log_params({"optimizer": "GEPA", "role": role, "start_version": start_version, "budget": options.budget,
                           "train_size": options.train_size, "val_size": options.val_size})  # fmt: skip
        with our_errors(), dspy.context(adapter=SchemaJSONAdapter()):
            optimized = optimizer.compile(program, trainset=examples[: options.train_size],
                                          valset=examples[options.train_size :])  # fmt: skip
        results = optimized.detailed_results
        scores = list(results.val_aggregate_scores)
        (_, predictor), = optimized.named_predictors()
        best_text = predictor.signature.instructions
        summary = {
            "role": role, "start_version": start_version, "start_score": scores[0], "best_score": max(scores),
            "candidates": len(scores), "metric_calls": results.total_metric_calls, "version": None, "log_dir": str(log_dir),
        }  # fmt: skip
        mlflow.log_metrics({"start_val_score": scores[0], "best_val_score": max(scores), "candidates": len(scores)})
        if best_text.strip() != start_text.strip() and max(scores) > scores[0]:
            change = summaries.get(best_text, "rewritten by GEPA")
            summary["version"] = tracking.register_prompt_version(
                role, best_text, f"GEPA: {change} (val score {scores[0]:.2f} -> {max(scores):.2f} on "
                f"{options.val_size} cases, {results.total_metric_calls} metric calls, from version {start_version})",
            )  # fmt: skip
            mlflow.set_tag("autodata.prompt_version", f"prompts:/{tracking.prompt_name(role)}/{summary['version']}")
    return summary


def _describe(record: dict) -> str:
    """One reflective example (challenger inputs, outputs, loop feedback) as a line for the proposer."""
    outputs = record.get("Generated Outputs")
    if isinstance(outputs, dict):
        outputs = f"question {outputs.get('question')!r}, answer {outputs.get('answer')!r}"
    strategy = (record.get("Inputs") or {}).get("strategy", "")
    return f"[{str(strategy)[:60]}] {outputs}: {record.get('Feedback', '')}"[:600]


def validation_score(llms: LLMSession, retriever: Retriever, recipe: Recipe, instructions: str,
                     seeds: list[SeedItem]) -> float:  # fmt: skip
    """Mean inner-loop verdict (`seed_feedback`'s score) of the challenger's `instructions` on `seeds`.

    Answers come from the LLM cache when the same instructions were scored on the same
    seeds before, so a parent version costs its calls once.
    """
    trial = recipe.with_changes(instructions={**recipe.instructions, "challenger": instructions},
                                strategies=CHALLENGER_ONLY)  # fmt: skip
    processor = SeedProcessor(trial, retriever, llms)
    scores = [seed_feedback(r.rejected, bool(r.accepted))[0] for r in map(processor.process, seeds)]
    return sum(scores) / len(scores)


def validation_seeds(seeds: Iterable[SeedItem], retriever: Retriever, *, skip: int, count: int) -> list[SeedItem]:
    """A fixed validation set: the first `count` seeds with evidence after the first `skip` (the
    trials' own seeds), falling back to those when the split has too few beyond them."""
    processor = SeedProcessor(Recipe(), retriever, llms=None)  # evidence packs only: no LLM call
    seeds = list(seeds)
    ordered = seeds[skip:] + seeds[:skip]
    return list(islice((s for s in ordered if processor.evidence_pack(s)[1] is not None), count))


def rewrite_from_rejections(llms: LLMSession, recipe: Recipe, run_dir: Path, trial_number: int, score: float, *,
                            retriever: Retriever, val_seeds: list[SeedItem], parent_version: int) -> int | None:  # fmt: skip
    """One proposal from a study trial's rejections, kept only if it beats the version it came from.

    The proposal and its parent are scored on the same fixed validation seeds; the winner
    is registered as a new, selectable challenger version, a loser as a rejected one (both
    scores in its commit message either way). Returns the new selectable version or None.
    """
    rejected = [json.loads(line) for line in (run_dir / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    reasons = dict(Counter(row["reason"] for row in rejected))
    examples = [f"{r['reason']}: {r['question']!r} ({r['detail']})" for r in rejected if r["question"]][:5]
    feedback = (f"Rejections: {reasons or 'none'}. Examples: " + "; ".join(examples)) if rejected else "No rejections."
    proposal = propose_instructions(llms, "challenger", recipe.instructions["challenger"], feedback,
                                    rollout_id=f"rewrite:{recipe.content_hash}")  # fmt: skip
    if proposal is None:
        return None
    if not val_seeds:
        logger.warning("challenger rewrite not registered: no validation seed has evidence")
        return None
    text, change = proposal
    before = validation_score(llms, retriever, recipe, recipe.instructions["challenger"], val_seeds)
    after = validation_score(llms, retriever, recipe, text, val_seeds)
    accepted = after > before
    version = tracking.register_prompt_version(
        "challenger", text,
        f"{change} (from trial {trial_number}, score {score:.3f}, rejections {reasons}; validation on "
        f"{len(val_seeds)} seeds: version {parent_version} {before:.2f} -> this {after:.2f}: "
        f"{'accepted' if accepted else 'rejected, not better'})",
        accepted=accepted, scores={"val_score": after, "parent_val_score": before},
    )  # fmt: skip
    logger.info("challenger prompt version %d %s (%.2f vs %.2f)", version, "accepted" if accepted else "rejected",
                after, before)  # fmt: skip
    return version if accepted else None
