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

Each step is a stage of `autodata.stages` with typed inputs and outputs; `SeedProcessor`
only wires them, and writes nothing: its `SeedResult` holds the seed's records
(`autodata.items`), which the job's single writer appends to the run folder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import dspy
from dspy.utils.exceptions import AdapterParseError
from pydantic import ValidationError

from autodata.items import AcceptedItem, Rejection, RejectionReason
from autodata.llm import LLMSession, UsageLedger
from autodata.llm.dspy_engine import our_errors
from autodata.llm.usage import attribute_usage_to
from autodata.recipe import Recipe
from autodata.roles import Challenger, SchemaJSONAdapter, StrongSolver, Tagger, Verifier, WeakSolver
from autodata.search.protocol import Retriever
from autodata.seeds import HeldOutQuestions, SeedItem
from autodata.settings import RoleName
from autodata.stages import (
    MAX_ANSWER_WORDS,
    MAX_QUESTION_WORDS,
    NEAR_DUPLICATE_THRESHOLD,
    NO_EVIDENCE,
    SOLVER_DIRECTED,
    STRATEGY_GUIDES,
    Candidate,
    Evidence,
    Problem,
    Task,
    Verdict,
    accepted_item,
    as_question,
    contamination,
    decided,
    final_verdict,
    next_solver,
    number_passages,
    paraphrase,
    pick_strategy,
    propose,
    reachable,
    rejection,
    rollout,
    rule_verdict,
    run_solvers,
    sample_solvers,
    screen,
    search_evidence,
    strong_hint,
    strong_settled,
    tag_question,
    title_of,
    verdict_detail,
    verdicts,
    verify,
)

__all__ = [  # what other modules import from here (the stages live in `autodata.stages`)
    "FEEDBACK",
    "MAX_ANSWER_WORDS",
    "MAX_QUESTION_WORDS",
    "NEAR_DUPLICATE_THRESHOLD",
    "SOLVER_DIRECTED",
    "STRATEGY_GUIDES",
    "SYNTHESIS_ROLES",
    "Candidate",
    "Outcome",
    "SeedProcessor",
    "SeedResult",
    "Verdict",
    "as_question",
    "decided",
    "final_verdict",
    "next_solver",
    "number_passages",
    "reachable",
    "rollout",
    "rule_verdict",
    "sample_solvers",
    "strong_settled",
    "title_of",
    "verdict_detail",
    "verdicts",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

FEEDBACK: dict[str, str] = {
    "too_easy": "The weak solver answered it without searching: ask about a less obvious fact, or hide the entity "
    "that gives the answer away.",
    "too_hard": "The strong solver could not find and support the answer by searching: make sure the answer is "
    "stated word for word in a cited passage and the question names what to search for.",
    "leak": "The question contains its own answer: remove the answer from the question.",
    "unsupported": "The answer is not stated where it must be: copy the answer exactly from a passage about the "
    "question, and name only years that passage gives (no 'next' or 'current' without its date).",
    "invalid": "The question broke the format: ask exactly one thing, end with '?', keep the answer short.",
    "duplicate": "The question repeats an earlier one: ask about a different fact.",
    "unverified": "The search agent's trajectory failed verification: ask something the passages state directly.",
    "hint_leak": "The search agent wrote the answer before its searches found it: ask about a fact the passages "
    "state plainly, so that searching finds it.",
    "bad_thought": "The search agent's reasoning was empty, repetitive or contradicted its actions: ask a simpler, "
    "direct question.",
    "gap": "The strong and weak solvers scored too close: make the question need the evidence.",
    "ungrounded_thought": "The search agent's reasoning stated facts it had not retrieved: ask about a fact the "
    "passages state plainly.",
    "not_multi_hop": "The search agent answered without walking both hops: describe the bridge entity so that "
    "its name must be found first.",
    "answerable": "A search finds the answer: ask for a fact about the topic that no passage states.",
    "paraphrase": "The question restates a held-out question: ask about a different fact.",
}
SYNTHESIS_ROLES: tuple[RoleName, ...] = ("challenger", "weak", "strong", "judge")  # the roles a seed calls


@dataclass
class SeedResult:
    """What one seed produced; written by the job's single writer."""

    seed_id: str
    items: list[AcceptedItem] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    cost: dict[str, dict[str, int]] = field(default_factory=dict)  # per role, as `UsageLedger.totals`

    @property
    def accepted(self) -> list[dict]:
        """The accepted items as written, for callers that read them by key."""
        return [item.model_dump() for item in self.items]

    @property
    def rejected(self) -> list[dict]:
        """The rejections as written, for callers that read them by key."""
        return [row.model_dump() for row in self.rejections]


class Outcome(NamedTuple):
    """What solving a screened candidate gave: the accepted item, or None and why not."""

    item: AcceptedItem | None
    reason: Verdict | RejectionReason  # "accepted" with an item
    detail: str = ""

    @classmethod
    def rejected(cls, problem: Problem) -> Outcome:
        return cls(None, problem.reason, problem.detail)


class SeedProcessor:
    """Runs the roles for one seed at a time; safe to share between worker threads.

    It wires the stages (`autodata.stages`) as a DSPy `forward` wires predictors, and is the
    `Roles` they call: the role modules are its attributes, looked up at each call.
    """

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

    def ask(self, role: RoleName, call: Callable[[], T]) -> T | None:
        """`call()` run as `role`; None when the reply could not be parsed (see `_as`)."""
        return self._as(role, call)

    def _as(self, role: RoleName, call: Callable[[], Any]) -> Any | None:
        """Run a module as `role`; None when the reply could not be parsed (that item fails, not the run).
        (Every role call goes through here: a test may replace it.)"""
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
        """The seed's gates, then its rounds: propose, screen, solve; a rejected round's reason is
        the next round's feedback. The first accepted candidate ends the seed."""
        problem = contamination(self.held_out, seed)  # its items would teach a dev/test answer
        evidence = self.evidence_pack(seed) if problem is None else None
        if evidence is not None and evidence.answer is None:  # nothing to ground a question in
            problem = NO_EVIDENCE
        if problem is not None:  # no LLM call spent
            result.rejections.append(rejection(self.hash, seed.id, problem))
            return
        feedback, tried, questions = "", set(), []
        for round_no in range(self.recipe.max_rounds):
            strategy = pick_strategy(self.recipe, self.hash, seed.id, round_no, tried)
            if strategy is None:
                break
            tried.add(strategy)
            proposal = propose(self, Task(seed, evidence.passages, evidence.answer, strategy, round_no, feedback))
            candidate = proposal.candidate
            problem = proposal.problem or screen(candidate, questions) or paraphrase(self.held_out, candidate)
            if problem is None:
                questions.append(candidate.question)
                outcome = self.solve(candidate)
                if outcome.item is not None:
                    result.items.append(outcome.item)
                    return
                problem = Problem(outcome.reason, outcome.detail)
            result.rejections.append(
                rejection(self.hash, seed.id, problem, candidate=candidate, round_no=round_no, strategy=strategy)
            )
            feedback = FEEDBACK[problem.reason]

    def evidence_pack(self, seed: SeedItem) -> Evidence:
        """The seed's evidence pack (`autodata.stages.search_evidence`)."""
        return search_evidence(self.retriever, self.recipe.search, seed)

    def solve(self, c: Candidate) -> Outcome:
        """The solvers' attempts and the acceptance rule, then the verifier and the tagger."""
        attempts = run_solvers(self, c)
        if (problem := attempts.problem(self.recipe.acceptance)) is not None:
            return Outcome.rejected(problem)
        kept = verify(self, c, attempts.correct(), attempts.weak_guesses)
        if isinstance(kept, Problem):
            return Outcome.rejected(kept)
        tags = tag_question(self, c)
        return Outcome(accepted_item(self.recipe, self.hash, c, attempts, tags, kept), "accepted")

    def hint(self, c: Candidate) -> str:
        """What the strong solver is told privately (`autodata.stages.strong_hint`)."""
        return strong_hint(self.recipe, c)
