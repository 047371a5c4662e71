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
rewrite uses the same function. An unparseable proposal costs one step; an endpoint
error (connection refused, budget spent) stops the run.

A rewrite is kept only when it beats its parent by a paired test on items it was not
selected on (`PairedTest`): both score each item with the same metric, and the 95%
bootstrap interval of the mean difference (`evals.intervals.paired_difference`) must lie
above 0. GEPA picks its best candidate on its own validation cases, so those cannot
confirm it: a holdout (the next seeds, or labelled cases, after train and val, which
GEPA never sees) does. A study's per-trial rewrite is tested on the study's validation
seeds, after the trial's own. A winner becomes a new version of `autodata.ROLE` in the
MLflow prompt registry; a loser is registered as rejected (never selected), for the
record. Either way the version's tags carry the evidence (`PairedTest.tags`) and its
commit message says it in words. GEPA's state lives in a folder under AUTODATA_HOME
named by what GEPA sees, so an interrupted run resumes there.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from statistics import fmean
from typing import Annotated

import mlflow
from dspy.utils.exceptions import AdapterParseError
from pydantic import StringConstraints, ValidationError

from autodata._io import iter_jsonl, read_jsonl
from autodata.answers import sub_exact_match
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
from evals.intervals import Estimate, paired_difference
from optimizers import tracking

logger = logging.getLogger(__name__)

# Partial credit: a question that was well-formed and grounded but missed the solvers' gap
# still beats one that broke the rules (leak, unsupported, invalid, duplicate).
REACHED_SOLVERS = ("too_easy", "too_hard", "gap", "unverified")
REACHED_SOLVERS_SCORE = 0.3
CHALLENGER_ONLY = {"keep": 0.0, "rephrase": 0.7, "multi_hop": 0.3}  # every round uses the challenger's instructions
# What a paired test compares, per item (the `autodata.metric` tag of a registered version).
INNER_LOOP_METRIC = "inner-loop verdict per seed (1 accepted, 0.3 reached the solvers, 0 otherwise)"
JUDGE_METRIC = "judge verdict per labelled case (1 right, 0 wrong)"


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


def propose_instructions(
    llms: LLMSession, role: str, current: str, feedback: str, *, rollout_id: str
) -> tuple[str, str] | None:
    """(new instructions, what changed) from the optimizer role, or None when its proposal is unusable.

    An unparseable proposal costs one step; autodata's endpoint errors (unreachable, budget
    spent) propagate, so a dead optimizer is never mistaken for "no rewrite".
    """
    job, keyword = AGENTS[role]
    with our_errors(), dspy.context(lm=llms.dspy_lm("optimizer"), adapter=SchemaJSONAdapter()):
        try:
            proposal = dspy.Predict(RewriteInstructions)(
                agent=job, current_instructions=current, feedback=feedback, config={"rollout_id": rollout_id}
            )
        except (AdapterParseError, ValidationError) as err:  # a malformed proposal costs one step, not the run
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


def challenger_program(llms: LLMSession, retriever: Retriever, recipe: Recipe, instructions: str) -> InnerLoopProgram:
    """The inner loop of `recipe` with these challenger instructions, every round through the challenger."""
    trial = recipe.with_changes(
        instructions={**recipe.instructions, "challenger": instructions}, strategies=CHALLENGER_ONLY
    )
    return InnerLoopProgram(SeedProcessor(trial, retriever, llms))


def seed_examples(seeds: Iterable[SeedItem]) -> list[dspy.Example]:
    return [
        dspy.Example(seed_id=s.id, question=s.question, golden_answers=s.golden_answers).with_inputs(
            "seed_id", "question", "golden_answers"
        )
        for s in seeds
    ]


def with_evidence(seeds: Iterable[SeedItem], processor: SeedProcessor, count: int) -> list[SeedItem]:
    """The first `count` seeds whose own search reaches an answer (the others cost no LLM call and teach nothing)."""
    return list(islice((s for s in seeds if processor.evidence_pack(s)[1] is not None), count))


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
        evidence = "\n".join(
            render_information(s["observation"]) for s in item["trajectory"]["steps"] if s["kind"] == "search"
        )
        others = items[index + 1 :] + items[:index]
        wrong = next((o["answer"] for o in others if not sub_exact_match(evidence, [o["answer"]])), None)
        for answer, label in ((item["answer"], "accept"), (wrong, "reject")):
            if answer is not None:
                examples.append(
                    dspy.Example(question=item["question"], answer=answer, evidence=evidence, label=label).with_inputs(
                        "question", "answer", "evidence"
                    )
                )
    return examples


def judge_metric(gold, pred, trace=None, pred_name=None, pred_trace=None) -> dspy.Prediction:
    states = "states" if gold.label == "accept" else "does not state"
    if pred.verdict == gold.label:
        return dspy.Prediction(score=1.0, feedback=f"Right: the evidence {states} {gold.answer!r}.")
    return dspy.Prediction(
        score=0.0, feedback=f"Wrong: the evidence {states} {gold.answer!r}, so the verdict must be {gold.label}."
    )


def item_scores(program: dspy.Module, metric: Callable, examples: list[dspy.Example]) -> list[float]:
    """Each example's `metric` score with `program`, in order: one side of a paired test."""
    return [_item_score(program, metric, example) for example in examples]


def _item_score(program: dspy.Module, metric: Callable, example: dspy.Example) -> float:
    with our_errors(), dspy.context(adapter=SchemaJSONAdapter()):
        try:
            return float(metric(example, program(**example.inputs())).score)
        except (AdapterParseError, ValidationError) as err:  # as in GEPA's own evaluation: an unusable reply scores 0
            logger.info("unparseable reply scored 0: %s", err)
            return 0.0


@dataclass(frozen=True)
class PairedTest:
    """A candidate's per-item scores against its parent's on the same items, which selected neither."""

    metric: str  # what each item's score is
    split: str  # which items, in words
    parent_score: float
    candidate_score: float
    difference: Estimate  # candidate - parent, paired over the items

    @classmethod
    def of(cls, parent: list[float], candidate: list[float], *, metric: str, split: str) -> PairedTest:
        return cls(metric, split, fmean(parent), fmean(candidate), paired_difference([candidate], [parent]))

    @property
    def accepted(self) -> bool:
        return self.difference.above_zero

    def tags(self) -> dict[str, str | int | float]:
        """The evidence, as `autodata.*` tags of the registered version."""
        d = self.difference
        return {
            "metric": self.metric,
            "split": self.split,
            "n": d.n,
            "parent_val_score": self.parent_score,
            "val_score": self.candidate_score,
            "difference": d.mean,
            "difference_low": d.low,
            "difference_high": d.high,
        }

    def in_words(self, parent_version: int) -> str:
        d = self.difference
        verdict = "accepted" if self.accepted else "rejected, not better"
        return (
            f"{d.n} {self.split}: version {parent_version} {self.parent_score:.2f} -> this "
            f"{self.candidate_score:.2f}: {verdict} (difference {d.mean:+.2f}, 95% interval [{d.low:.2f}, "
            f"{d.high:.2f}], {'above' if self.accepted else 'not above'} 0)"
        )


@dataclass(frozen=True)
class PromptOptimization:
    budget: int = 24  # metric calls: each runs the inner loop on one seed
    train_size: int = 6
    val_size: int = 4
    holdout: int = 6  # further cases GEPA never sees: its best must beat the start on them to be registered
    minibatch: int = 3
    num_threads: int = 2


def optimize_prompt(
    role: str,
    *,
    settings: Settings,
    llms: LLMSession,
    seeds: Iterable[SeedItem] = (),
    items: list[dict] = (),
    retriever: Retriever | None = None,
    options: PromptOptimization = PromptOptimization(),
    base: Recipe | None = None,
) -> dict:
    """GEPA on `role`'s instructions (see the module docstring); returns a summary dict.

    The challenger learns from the inner loop run on `seeds` (with `retriever`); the
    verifier's judge from labelled cases made of accepted `items` of a synthesis run.
    The cases after train and val are the holdout that decides whether GEPA's best is
    registered. Every call goes through `llms`, the caller's session.
    """
    if role not in OPTIMIZED_ROLES:
        raise AutodataError(
            f"Role {role!r} cannot be optimized: choose one of {', '.join(OPTIMIZED_ROLES)}. "
            "The solvers' prompts and the acceptance checks are never optimized."
        )
    if min(options.train_size, options.val_size, options.holdout) < 1:
        raise AutodataError(
            f"Prompt optimization needs at least one train, validation and holdout case each, "
            f"not train {options.train_size}, val {options.val_size}, "
            f"holdout {options.holdout}."
        )
    experiment_id = tracking.setup(settings)
    tracking.ensure_seed_prompts()
    start_version = tracking.latest_prompt_version(role) or 1
    start_text = tracking.load_prompt_version(role, start_version)
    seen = options.train_size + options.val_size  # what GEPA sees
    need = seen + options.holdout

    if role == "challenger":
        base = base or Recipe()
        make_program = functools.partial(challenger_program, llms, retriever, base)
        program, metric, measure = make_program(start_text), inner_loop_metric, INNER_LOOP_METRIC
        processor = program.shared.value
        usable = with_evidence(seeds, processor, need)
        examples, inputs = seed_examples(usable), [processor.hash, [s.id for s in usable[:seen]]]
        shortage = f"Only {len(usable)} of the seeds have evidence in their own search"
        split = "holdout seeds after GEPA's train and val seeds"
    else:
        make_program = functools.partial(JudgeProgram, llms=llms)
        program, metric, measure = make_program(start_text), judge_metric, JUDGE_METRIC
        examples = judge_examples(list(items))[:need]
        inputs = [ex.toDict() for ex in examples[:seen]]
        shortage = f"The accepted items make only {len(examples)} labelled cases"
        split = "holdout labelled cases after GEPA's train and val cases"
    if len(examples) < need:
        raise AutodataError(
            f"{shortage}; prompt optimization needs {need} (train {options.train_size} + val "
            f"{options.val_size} + holdout {options.holdout}). Pass more "
            f"{'seeds' if role == 'challenger' else 'items'}, or a smaller --holdout."
        )
    gepa_options = {k: v for k, v in asdict(options).items() if k != "holdout"}  # GEPA's run does not depend on it
    key = hashlib.sha256(json.dumps([role, start_text, inputs, gepa_options]).encode()).hexdigest()[:16]
    log_dir = settings.home_dir / "prompt-optimization" / role / key
    summaries: dict[str, str] = {}
    failures: list[AutodataError] = []  # GEPA logs a proposer's exception and goes on: keep it, stop, raise it

    def proposer(candidate: dict[str, str], reflective_dataset: dict, components_to_update: list[str]) -> dict:
        new = {}
        for name in components_to_update:
            records = reflective_dataset.get(name, [])
            feedback = " | ".join(_describe(r) for r in records[:5]) or "No feedback."
            # a new sample for each (instructions, feedback): the same pair replays from the LLM cache
            rollout_id = f"gepa:{key}:{hashlib.sha256((candidate[name] + feedback).encode()).hexdigest()[:12]}"
            try:
                proposal = propose_instructions(llms, role, candidate[name], feedback, rollout_id=rollout_id)
            except AutodataError as err:  # the optimizer endpoint is down, or the budget spent
                failures.append(err)
                raise
            if proposal is not None:
                new[name], summaries[proposal[0]] = proposal
        return new

    optimizer = dspy.GEPA(
        metric=metric,
        max_metric_calls=options.budget,
        reflection_minibatch_size=options.minibatch,
        instruction_proposer=proposer,
        reflection_lm=llms.dspy_lm("optimizer"),
        num_threads=options.num_threads,
        track_stats=True,
        log_dir=str(log_dir),
        use_merge=False,
        seed=0,
        warn_on_score_mismatch=False,
        gepa_kwargs={"stop_callbacks": lambda state: bool(failures)},
    )
    with mlflow.start_run(
        run_name=f"prompts optimize {role}",
        experiment_id=experiment_id,
        tags={"autodata.kind": "prompt-optimization", "autodata.role": role},
    ):
        mlflow.log_params(
            {
                "optimizer": "GEPA",
                "role": role,
                "start_version": start_version,
                "budget": options.budget,
                "train_size": options.train_size,
                "val_size": options.val_size,
                "holdout": options.holdout,
            }
        )
        with our_errors(), dspy.context(adapter=SchemaJSONAdapter()):
            optimized = optimizer.compile(
                program, trainset=examples[: options.train_size], valset=examples[options.train_size : seen]
            )
        if failures:
            raise failures[0]
        results = optimized.detailed_results
        scores = list(results.val_aggregate_scores)
        ((_, predictor),) = optimized.named_predictors()
        best_text = predictor.signature.instructions
        summary = {
            "role": role,
            "start_version": start_version,
            "start_score": scores[0],
            "best_score": max(scores),
            "candidates": len(scores),
            "metric_calls": results.total_metric_calls,
            "holdout_size": options.holdout,
            "holdout_split": split,
            "holdout_start_score": None,
            "holdout_best_score": None,
            "holdout_difference": None,
            "version": None,
            "rejected_version": None,
            "log_dir": str(log_dir),
        }
        mlflow.log_metrics({"start_val_score": scores[0], "best_val_score": max(scores), "candidates": len(scores)})
        if best_text.strip() != start_text.strip():
            holdout = examples[seen:]
            test = PairedTest.of(
                item_scores(program, metric, holdout),
                item_scores(make_program(best_text), metric, holdout),
                metric=measure,
                split=split,
            )
            summary.update(_register_gepa_best(role, best_text, test, summary, summaries, options))
    return summary


def _register_gepa_best(
    role: str, text: str, test: PairedTest, summary: dict, summaries: dict[str, str], options: PromptOptimization
) -> dict:
    """GEPA's best as a new version (rejected unless it beat the start on the holdout); summary updates."""
    d = test.difference
    mlflow.log_metrics(
        {
            "holdout_start_score": test.parent_score,
            "holdout_best_score": test.candidate_score,
            "holdout_difference": d.mean,
            "holdout_difference_low": d.low,
            "holdout_difference_high": d.high,
        }
    )
    message = (
        f"GEPA: {summaries.get(text, 'rewritten by GEPA')} (paired test on "
        f"{test.in_words(summary['start_version'])}; chosen on GEPA's val score {summary['start_score']:.2f} "
        f"-> {summary['best_score']:.2f} on {options.val_size} cases, "
        f"{summary['metric_calls']} metric calls)"
    )
    version = tracking.register_prompt_version(role, text, message, accepted=test.accepted, evidence=test.tags())
    status = "accepted" if test.accepted else "rejected"
    mlflow.set_tags(
        {
            "autodata.prompt_version": f"prompts:/{tracking.prompt_name(role)}/{version}",
            "autodata.prompt_status": status,
        }
    )
    return {
        "holdout_start_score": test.parent_score,
        "holdout_best_score": test.candidate_score,
        "holdout_difference": d.as_dict(),
        "version": version if test.accepted else None,
        "rejected_version": None if test.accepted else version,
    }


def _describe(record: dict) -> str:
    """One reflective example (challenger inputs, outputs, loop feedback) as a line for the proposer."""
    outputs = record.get("Generated Outputs")
    if isinstance(outputs, dict):
        outputs = f"question {outputs.get('question')!r}, answer {outputs.get('answer')!r}"
    strategy = (record.get("Inputs") or {}).get("strategy", "")
    return f"[{str(strategy)[:60]}] {outputs}: {record.get('Feedback', '')}"[:600]


def seed_scores(
    llms: LLMSession, retriever: Retriever, recipe: Recipe, instructions: str, seeds: list[SeedItem]
) -> list[float]:
    """The inner-loop verdict (`seed_feedback`'s score) of the challenger's `instructions` on each of `seeds`.

    Answers come from the LLM cache when the same instructions were scored on the same
    seeds before, so a parent version costs its calls once.
    """
    program = challenger_program(llms, retriever, recipe, instructions)
    return item_scores(program, inner_loop_metric, seed_examples(seeds))


def validation_seeds(seeds: Iterable[SeedItem], retriever: Retriever, *, skip: int, count: int) -> list[SeedItem]:
    """A fixed validation set: the first `count` seeds with evidence after the first `skip` (the
    trials' own seeds), falling back to those when the split has too few beyond them."""
    processor = SeedProcessor(Recipe(), retriever, llms=None)  # evidence packs only: no LLM call
    seeds = list(seeds)
    return with_evidence(seeds[skip:] + seeds[:skip], processor, count)


def _validation_split(run_dir: Path, val_seeds: list[SeedItem]) -> str:
    """Which seeds the paired test ran on, in words: after the trial's own, or partly those."""
    trial_seeds = {row["seed_id"] for row in iter_jsonl(run_dir / "progress.jsonl", missing_ok=True)}
    shared = sum(s.id in trial_seeds for s in val_seeds)
    if not shared:
        return "train seeds after the trial's"
    return f"train seeds, {shared} of them the trial's own (the split has too few beyond them)"


def rewrite_from_rejections(
    llms: LLMSession,
    recipe: Recipe,
    run_dir: Path,
    trial_number: int,
    score: float,
    *,
    retriever: Retriever,
    val_seeds: list[SeedItem],
    parent_version: int,
) -> int | None:
    """One proposal from a study trial's rejections, kept only if it beats the version it came from.

    The proposal and its parent are scored seed by seed on the same fixed validation seeds
    and compared by a paired test (`PairedTest`): a winner, whose 95% interval of the
    difference lies above 0, is registered as a new, selectable challenger version; a loser
    as a rejected one; the evidence in its tags and commit message either way. Returns the
    new selectable version or None.
    """
    rejected = read_jsonl(run_dir / "rejected.jsonl", missing_ok=True)
    reasons = dict(Counter(row["reason"] for row in rejected))
    examples = [f"{r['reason']}: {r['question']!r} ({r['detail']})" for r in rejected if r["question"]][:5]
    feedback = (f"Rejections: {reasons or 'none'}. Examples: " + "; ".join(examples)) if rejected else "No rejections."
    proposal = propose_instructions(
        llms, "challenger", recipe.instructions["challenger"], feedback, rollout_id=f"rewrite:{recipe.content_hash}"
    )
    if proposal is None:
        return None
    if not val_seeds:
        logger.warning("challenger rewrite not registered: no validation seed has evidence")
        return None
    text, change = proposal
    test = PairedTest.of(
        seed_scores(llms, retriever, recipe, recipe.instructions["challenger"], val_seeds),
        seed_scores(llms, retriever, recipe, text, val_seeds),
        metric=INNER_LOOP_METRIC,
        split=_validation_split(run_dir, val_seeds),
    )
    version = tracking.register_prompt_version(
        "challenger",
        text,
        f"{change} (from trial {trial_number}, score {score:.3f}, rejections {reasons}; "
        f"validation on {test.in_words(parent_version)})",
        accepted=test.accepted,
        evidence=test.tags(),
    )
    logger.info(
        "challenger prompt version %d %s: %s", version, "accepted" if test.accepted else "rejected", test.difference
    )
    return version if test.accepted else None
