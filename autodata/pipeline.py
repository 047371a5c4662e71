"""The inner loop: Agentic Self-Instruct over seeds, one seed at a time per worker.

Per seed: build an evidence pack by real searches, then for up to
`max_rounds` rounds: the challenger proposes a candidate (or the seed is kept as is),
programmatic quality checks run, the weak and strong solvers attempt it (stopping as
soon as the acceptance rule is decided), and the verifier picks a trajectory to keep.
A rejected round feeds targeted feedback to the next. A failed candidate is data (a
rejection with a reason); a failed run (unreachable endpoint or retriever, spent budget)
is an exception.

Every LLM call carries a rollout id derived from the recipe, seed, round and attempt,
so a re-run replays cached answers and continues exactly where it stopped.
"""

from __future__ import annotations

import logging
import random
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import dspy
from dspy.utils.exceptions import AdapterParseError
from pydantic import ValidationError

from autodata.answers import exact_match, normalize_answer, sub_exact_match
from autodata.llm import LLMSession, UsageLedger
from autodata.llm.dspy_engine import our_errors
from autodata.llm.usage import attribute_usage_to
from autodata.recipe import Acceptance, Recipe, Strategy
from autodata.roles import Challenger, SchemaJSONAdapter, StrongSolver, Tagger, Verifier, WeakSolver
from autodata.search.protocol import Hit, Retriever
from autodata.seeds import HeldOutQuestions, SeedItem, question_similarity
from autodata.settings import RoleName
from autodata.trajectory import Trajectory

logger = logging.getLogger(__name__)

STRATEGY_GUIDES: dict[Strategy, str] = {
    "rephrase": "Rephrase: ask for the same answer as the seed question with new wording, using facts stated in "
    "the passages. Do not copy the seed question.",
    "multi_hop": "Multi-hop: the bridge entity is '{bridge}'. Describe it with facts from passage [1] without "
    "writing its name, and ask for the fact about it that passage [2] states.",
}
FEEDBACK: dict[str, str] = {
    "too_easy": "The weak solver answered it without searching: ask about a less obvious fact, or hide the entity "
    "that gives the answer away.",
    "too_hard": "The strong solver could not find and support the answer by searching: make sure the answer is "
    "stated word for word in a cited passage and the question names what to search for.",
    "leak": "The question contains its own answer: remove the answer from the question.",
    "unsupported": "The answer does not occur in the cited passages: copy the answer exactly from a passage.",
    "invalid": "The question broke the format: ask exactly one thing, end with '?', keep the answer short.",
    "duplicate": "The question repeats an earlier one: ask about a different fact.",
    "unverified": "The search agent's trajectory failed verification: ask something the passages state directly.",
    "hint_leak": "The search agent wrote the answer before its searches found it: ask about a fact the passages "
    "state plainly, so that searching finds it.",
    "bad_thought": "The search agent's reasoning was empty, repetitive or contradicted its actions: ask a simpler, "
    "direct question.",
    "gap": "The strong and weak solvers scored too close: make the question need the evidence.",
}
# Words of a question that talks to the solvers (reward hacking), matched as whole words:
# "Armstrong", "strongest" and "weakest" are legitimate questions.
SOLVER_DIRECTED = re.compile(
    r"\b(solvers?|weak|strong|ignore|instructions?|pretend|wrong answer|answer with)\b", re.IGNORECASE
)
SYNTHESIS_ROLES: tuple[RoleName, ...] = ("challenger", "weak", "strong", "judge")  # the roles a seed calls
NEAR_DUPLICATE_THRESHOLD = 0.8  # word-bigram Jaccard, as `autodata data check` uses by default
MAX_QUESTION_WORDS = 40
MAX_ANSWER_WORDS = 8


@dataclass(frozen=True)
class Candidate:
    seed_id: str
    round: int
    strategy: Strategy
    question: str
    answer: str
    passages: tuple[Hit, ...]  # the evidence that states the answer (multi-hop: bridge passage first)
    bridge: str | None = None

    @property
    def hops(self) -> int:
        return 2 if self.strategy == "multi_hop" else 1


@dataclass
class SeedResult:
    """What one seed produced; written by the job's single writer."""

    seed_id: str
    accepted: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    tags: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, dict[str, int]] = field(default_factory=dict)


def _int_seed(text: str) -> int:
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


def rollout(recipe_hash: str, *parts: object) -> dict:
    """DSPy call config: a stable rollout id (cache key) and sampling seed per attempt."""
    rollout_id = ":".join([recipe_hash, *map(str, parts)])
    return {"rollout_id": rollout_id, "seed": _int_seed(rollout_id)}


def as_question(text: str) -> str:
    text = " ".join(text.split()).rstrip("?. ")
    return text[:1].upper() + text[1:] + "?"


def title_of(hit: Hit) -> str:
    return hit.title.strip().strip('"')


def number_passages(hits: list[Hit] | tuple[Hit, ...]) -> str:
    return "\n".join(f"[{i}] {title_of(h)}: {h.text}" for i, h in enumerate(hits, start=1))


class SeedProcessor:
    """Runs the roles for one seed at a time; safe to share between worker threads."""

    def __init__(
        self, recipe: Recipe, retriever: Retriever, llms: LLMSession, *, held_out: HeldOutQuestions | None = None
    ):
        self.recipe, self.retriever, self.llms, self.held_out = recipe, retriever, llms, held_out
        self.hash = recipe.content_hash
        self.tagger = Tagger(recipe.instructions["tagger"])
        self.challenger = Challenger(recipe.instructions["challenger"])
        self.weak = WeakSolver(recipe.weak_mode, retriever, recipe.search)
        self.strong = StrongSolver(retriever, recipe.search)
        self.verifier = Verifier(recipe.instructions["verifier"], retriever, recipe.search, llm_judge=recipe.llm_judge)
        self.adapter = SchemaJSONAdapter()

    def _as(self, role: RoleName, call: Callable[[], Any]) -> Any | None:
        """Run a module as `role`; None when the reply could not be parsed (that item fails, not the run)."""
        with dspy.context(lm=self.llms.dspy_lm(role), adapter=self.adapter), our_errors():
            try:
                return call()
            except (AdapterParseError, ValidationError) as err:
                logger.info("%s reply unparseable: %s", role, str(err).splitlines()[0])
                return None

    # --- one seed ------------------------------------------------------------------

    def process(self, seed: SeedItem) -> SeedResult:
        result = SeedResult(seed.id)
        with attribute_usage_to(UsageLedger()) as cost:
            self._process(seed, result)
        result.cost = cost.totals()
        return result

    def _process(self, seed: SeedItem, result: SeedResult) -> None:
        if self.held_out is not None and (found := self.held_out.overlap(seed)) is not None:
            detail = f"overlaps held-out question {found['held_out_id']!r} ({found['overlap']:.0%} of its word 5-grams)"
            result.rejected.append(self._rejection(seed, None, "contaminated_seed", detail))
            return  # its items would teach a dev/test answer: no LLM call spent
        evidence, answer = self.evidence_pack(seed)
        if answer is None:  # nothing to ground a question in: no LLM call spent
            result.rejected.append(
                self._rejection(seed, None, "no_evidence", "no retrieved passage holds a golden answer")
            )
            return
        feedback, tried, questions = "", set(), []
        for round_no in range(self.recipe.max_rounds):
            strategy = self.pick_strategy(seed.id, round_no, tried)
            if strategy is None:
                break
            tried.add(strategy)
            candidate, problem = self.propose(seed, answer, evidence, strategy, round_no, feedback)
            if candidate is not None and problem is None:
                problem = self.quality_problem(candidate, questions)
            if problem is not None:
                reason, detail = problem
                result.rejected.append(self._rejection(seed, candidate, reason, detail, round_no, strategy))
                feedback = FEEDBACK[reason]
                continue
            questions.append(candidate.question)
            item, reason, detail = self.solve(candidate)
            if item is not None:
                result.tags = item["tags"]
                result.accepted.append(item)
                return
            result.rejected.append(self._rejection(seed, candidate, reason, detail, round_no, strategy))
            feedback = FEEDBACK[reason]

    def _rejection(self, seed, candidate, reason, detail, round_no=None, strategy=None) -> dict:
        return {
            "seed_id": seed.id,
            "round": round_no,
            "strategy": strategy,
            "reason": reason,
            "detail": detail,
            "question": candidate.question if candidate else None,
            "answer": candidate.answer if candidate else None,
            "recipe_hash": self.hash,
        }

    # --- evidence and candidates ---------------------------------------------------

    def evidence_pack(self, seed: SeedItem) -> tuple[list[Hit], str | None]:
        """The passages a search for the seed question returns, those stating a golden answer first.

        A seed whose answer the question's own search does not reach cannot teach
        search-augmented answering, so it gets no evidence (and costs no LLM call).
        """
        hits = self.retriever.search([seed.question], topk=self.recipe.search.evidence_passages)[0]
        for golden in seed.golden_answers:
            stating = [h for h in hits if sub_exact_match(h.contents, [golden])]
            if stating:
                return stating + [h for h in hits if h not in stating], golden
        return hits, None

    def pick_strategy(self, seed_id: str, round_no: int, tried: set[str]) -> Strategy | None:
        weights = {
            s: w for s, w in self.recipe.strategies.weights().items() if w > 0 and not (s == "keep" and s in tried)
        }
        if not weights:
            return None
        rng = random.Random(_int_seed(f"{self.hash}:{seed_id}:{round_no}"))
        return rng.choices(list(weights), weights=list(weights.values()))[0]

    def propose(self, seed, answer, evidence, strategy, round_no, feedback):
        """(candidate, None) or (candidate-or-None, (reason, detail))."""
        stating = tuple(h for h in evidence if sub_exact_match(h.contents, [answer]))
        if strategy == "keep":
            return Candidate(seed.id, round_no, "keep", as_question(seed.question), answer, stating[:2]), None
        passages, bridge = list(evidence), None
        if strategy == "multi_hop":
            found = self.find_bridge(stating[0])
            if found is None:
                return None, ("invalid", "multi_hop: no passage mentions a bridge entity")
            passages, bridge = [found, stating[0]], title_of(stating[0])
        guide = STRATEGY_GUIDES[strategy].format(bridge=bridge)
        proposal = self._as(
            "challenger",
            lambda: self.challenger(
                strategy=guide,
                evidence=number_passages(passages),
                seed_question=seed.question,
                seed_answer=answer,
                feedback=feedback,
                config=rollout(self.hash, seed.id, round_no, "challenger"),
            ),
        )
        if proposal is None:
            return None, ("invalid", "the challenger's reply could not be parsed")
        cited = [passages[n - 1] for n in proposal.supporting_passages if 1 <= n <= len(passages)]
        if strategy == "multi_hop":
            cited = passages  # both hops are needed by construction
        candidate = Candidate(
            seed.id, round_no, strategy, proposal.question.strip(), proposal.answer.strip(), tuple(cited), bridge
        )
        if not cited:
            return candidate, ("invalid", "cites no passage of the evidence pack")
        return candidate, None

    def find_bridge(self, answer_passage: Hit) -> Hit | None:
        """A passage about another topic that mentions the answer passage's title."""
        bridge = title_of(answer_passage)
        for hit in self.retriever.search([bridge], topk=self.recipe.search.evidence_passages)[0]:
            if hit.id != answer_passage.id and sub_exact_match(hit.text, [bridge]):
                return hit
        return None

    def quality_problem(self, c: Candidate, earlier_questions: list[str]) -> tuple[str, str] | None:
        words = c.question.split()
        if not c.question.endswith("?") or c.question.count("?") != 1 or not 3 <= len(words) <= MAX_QUESTION_WORDS:
            return "invalid", "not one question of 3-40 words ending with '?'"
        if not c.answer.strip() or len(c.answer.split()) > MAX_ANSWER_WORDS:
            return "invalid", f"answer must be 1-{MAX_ANSWER_WORDS} words"
        if SOLVER_DIRECTED.search(c.question):
            return "invalid", "the question addresses the solvers"
        if normalize_answer(c.answer) and f" {normalize_answer(c.answer)} " in f" {normalize_answer(c.question)} ":
            return "leak", "the answer appears in the question"
        if c.bridge and f" {normalize_answer(c.bridge)} " in f" {normalize_answer(c.question)} ":
            return "leak", "the multi-hop question names its bridge entity"
        answer_passages = c.passages[-1:] if c.hops == 2 else c.passages  # multi-hop: the second hop states it
        if not any(sub_exact_match(h.contents, [c.answer]) for h in answer_passages):
            return "unsupported", "the answer is not in the cited passages"
        for earlier in earlier_questions:
            if question_similarity(c.question, earlier) >= NEAR_DUPLICATE_THRESHOLD:
                return "duplicate", f"repeats an earlier candidate: {earlier!r}"
        return None

    # --- solving and accepting -----------------------------------------------------

    def tag(self, c: Candidate) -> dict[str, Any]:
        """The tagger's classification of the accepted question (not of its seed). A two-hop item
        is `multi_hop_composition` by construction, whatever the tagger says."""
        tags = self._as(
            "judge", lambda: self.tagger(question=c.question, config=rollout(self.hash, c.seed_id, c.round, "tag"))
        )
        fields = ("task_type", "needs_search", "evidence_scope", "recommended_sources")
        found = {k: (tags[k] if tags is not None else None) for k in fields}
        if c.hops == 2:
            found["task_type"] = "multi_hop_composition"
        return found

    def solve(self, c: Candidate) -> tuple[dict | None, str, str]:
        """Weak and strong attempts as `sample_solvers` orders them, then the acceptance rule and the verifier."""
        a, hint = self.recipe.acceptance, self.hint(c)
        trajectories: list[Trajectory | None] = []  # one per strong attempt; None where its reply was unparseable
        weak_scores, strong_scores = sample_solvers(
            lambda i: self.weak_attempt(c, i), lambda i: self.strong_attempt(c, i, hint, trajectories), a
        )
        reason = final_verdict(weak_scores, strong_scores, a)
        if reason != "accepted":
            return None, reason, verdict_detail(reason, weak_scores, strong_scores, a)
        correct = [t for t, s in zip(trajectories, strong_scores, strict=True) if s]
        verdict = self._as(
            "judge",
            lambda: self.verifier(
                question=c.question,
                answer=c.answer,
                trajectories=correct,
                config=rollout(self.hash, c.seed_id, c.round, "judge"),
                bridge=c.bridge,
            ),
        )
        if verdict is None:
            return None, "unverified", "the judge's reply could not be parsed"
        if verdict.trajectory is None:
            return None, verdict.code, verdict.reason
        item = {
            "id": f"{c.seed_id}-r{c.round}",
            "seed_id": c.seed_id,
            "round": c.round,
            "strategy": c.strategy,
            "hops": c.hops,
            "question": c.question,
            "answer": c.answer,
            "bridge": c.bridge,
            "passage_ids": [h.id for h in c.passages],
            "tags": self.tag(c),
            "weak": {"mode": self.recipe.weak_mode, "scores": weak_scores},
            "strong": {"hint_mode": self.recipe.hint_mode, "hint": hint, "scores": strong_scores},
            "acceptance_rule": a.rule,
            "recipe_hash": self.hash,
            "trajectory": verdict.trajectory.model_dump(mode="json"),
        }
        return item, "accepted", ""

    def weak_attempt(self, c: Candidate, i: int) -> float:
        """Weak attempt `i` (its rollout index, so a re-run replays it from the cache), scored 0/1."""
        prediction = self._as(
            "weak", lambda: self.weak(question=c.question, config=rollout(self.hash, c.seed_id, c.round, "weak", i))
        )
        return exact_match(prediction.answer, [c.answer]) if prediction is not None else 0.0

    def strong_attempt(self, c: Candidate, i: int, hint: str, trajectories: list[Trajectory | None]) -> float:
        """Strong attempt `i`, scored 0/1; appends its trajectory (None when unparseable) to `trajectories`."""
        known = c.answer if self.recipe.hint_mode == "answer" else None
        prediction = self._as(
            "strong",
            lambda: self.strong(
                question=c.question,
                hint=hint,
                config=rollout(self.hash, c.seed_id, c.round, "strong", i),
                known_answer=known,
            ),
        )
        trajectory = prediction.trajectory if prediction is not None else None
        trajectories.append(trajectory)  # aligned with the strong scores, attempt by attempt
        if trajectory is None:
            return 0.0
        grounded = any(sub_exact_match(s.observation, [c.answer]) for s in trajectory.searches)
        return float(trajectory.answer is not None and exact_match(trajectory.answer, [c.answer]) and grounded)

    def hint(self, c: Candidate) -> str:
        """What the strong solver is told privately. A multi-hop hint names only the first hop's
        article: the answer's article is the bridge entity the question hides. The verifier
        rejects any trajectory that shows the hint (`hint_leak`)."""
        if self.recipe.hint_mode == "answer":
            if c.hops == 2:
                return (
                    f"The answer is {c.answer!r}. Start from the article {title_of(c.passages[0])!r}, find what "
                    "the question describes, then search for that."
                )
            return (
                f"The answer is {c.answer!r}. The article {title_of(c.passages[-1])!r} states it: "
                "search for that article, then answer."
            )
        if self.recipe.hint_mode == "titles":
            return "Useful articles: " + "; ".join(title_of(h) for h in (c.passages[:1] if c.hops == 2 else c.passages))
        return ""


# --- the acceptance rule and when sampling may stop: pure functions of the 0/1 scores so far --------

Verdict = Literal["accepted", "too_easy", "too_hard", "gap"]


def rule_verdict(weak_correct: int, strong_correct: int, a: Acceptance) -> Verdict:
    """The acceptance rule on all `a.attempts_per_solver` attempts of each solver, checked in this order."""
    k = a.attempts_per_solver
    weak, strong = weak_correct / k, strong_correct / k
    if weak >= a.weak_max_accuracy:
        return "too_easy"
    if strong < a.strong_min_accuracy:
        return "too_hard"
    if strong - weak < a.min_gap:
        return "gap"
    return "accepted"


def reachable(scores: list[float], k: int) -> range:
    """The numbers of correct attempts out of `k` that the attempts made (`scores`) can still end at."""
    correct = round(sum(scores))
    return range(correct, correct + k - len(scores) + 1)


def verdicts(weak: list[float], strong: list[float], a: Acceptance) -> set[Verdict]:
    """Every verdict some outcome of the attempts not yet made would give."""
    k = a.attempts_per_solver
    return {rule_verdict(w, s, a) for w in reachable(weak, k) for s in reachable(strong, k)}


def next_solver(weak: list[float], strong: list[float], a: Acceptance) -> Literal["weak", "strong"] | None:
    """The solver whose next attempt is needed, or None when sampling is over.

    Without early stopping: all k weak attempts, then all k strong ones unless the item is too easy.
    With it: weak attempts until too_easy is certain or out of reach; then strong ones until no
    outcome of the strong attempts left could change the verdict, for any outcome of the weak ones
    left; then the weak ones left until the verdict is settled. Sampling stops only when every
    outcome of the attempts not made gives one verdict, so the verdict is the one all 2k attempts
    give; and strong attempts are made only when too_easy is out of reach, where all k are made
    without early stopping: early stopping never makes more calls.
    """
    k = a.attempts_per_solver
    if not a.early_stop:
        if len(weak) < k:
            return "weak"
        return "strong" if len(strong) < k and verdicts(weak, [], a) != {"too_easy"} else None
    if len(verdicts(weak, strong, a)) == 1:
        return None
    if not decided(weak, k, a.weak_max_accuracy):  # too_easy still hinges on the weak attempts left
        return "weak"
    if len(strong) < k and not strong_settled(weak, strong, a):
        return "strong"
    return "weak"  # unsettled, the strong side settled: the verdict hinges on the weak attempts left


def strong_settled(weak: list[float], strong: list[float], a: Acceptance) -> bool:
    """Whether, whatever the weak attempts left give, the strong attempts left cannot change the verdict."""
    k = a.attempts_per_solver
    return all(len({rule_verdict(w, s, a) for s in reachable(strong, k)}) == 1 for w in reachable(weak, k))


def sample_solvers(
    weak_attempt: Callable[[int], float], strong_attempt: Callable[[int], float], a: Acceptance
) -> tuple[list[float], list[float]]:
    """The 0/1 scores of the attempts `next_solver` asks for; attempt i of a solver is called with i."""
    weak: list[float] = []
    strong: list[float] = []
    while (solver := next_solver(weak, strong, a)) is not None:
        if solver == "weak":
            weak.append(weak_attempt(len(weak)))
        else:
            strong.append(strong_attempt(len(strong)))
    return weak, strong


def final_verdict(weak: list[float], strong: list[float], a: Acceptance) -> Verdict:
    """The verdict of finished sampling: the same for every outcome of the attempts not made."""
    (found,) = verdicts(weak, strong, a)
    return found


def verdict_detail(reason: Verdict, weak: list[float], strong: list[float], a: Acceptance) -> str:
    """Why a candidate was rejected, from the attempts made."""
    weak_text = f"weak solver scored {sum(weak):.0f}/{len(weak)}"
    strong_text = f"strong solver scored {sum(strong):.0f}/{len(strong)}"
    gap_text = f"{strong_text}, {weak_text} (of {a.attempts_per_solver} each): gap < {a.min_gap}"
    return {"too_easy": weak_text, "too_hard": strong_text, "gap": gap_text}.get(reason, "")


def decided(scores: list[float], k: int, threshold: float) -> bool:
    """Whether `accuracy >= threshold` over `k` attempts is settled, whatever the rest give."""
    correct, remaining = sum(scores), k - len(scores)
    return correct / k >= threshold or (correct + remaining) / k < threshold
