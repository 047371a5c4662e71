"""What the stages share: the candidate question, a problem (why something is rejected), the
roles a stage calls, and the rollout ids that make every LLM call replayable."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from autodata.items import RejectionReason
from autodata.llm.dspy_engine import call_config
from autodata.recipe import Recipe, Strategy
from autodata.search.protocol import Hit, Retriever, title_of
from autodata.settings import RoleName

T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    """Why a seed or a candidate is rejected: `reason`, counted in the manifest, and `detail`, for people."""

    reason: RejectionReason
    detail: str


# The first-layer task type of the method's two-layer scheme that each strategy makes.
TASK_TYPES: dict[Strategy, str] = {
    "keep": "simple_fact",
    "rephrase": "simple_fact",
    "multi_hop": "multi_hop_composition",
    "insufficient_evidence": "insufficient_evidence",
    "false_premise": "false_premise",
    "conflicting_evidence": "conflicting_evidence",
    "timely": "timely_fact",
    "scope_ambiguity": "scope_ambiguity",
    "document_based": "document_based",
}


@dataclass(frozen=True)
class Candidate:
    """A question and the answer a solver must give. `answer` is the fact itself, or one of the
    fixed forms (`autodata.answers`: a refusal, a premise correction, a conflict report, a value
    "as of" a date); `facts` are what that answer rests on, each stated in a cited passage and,
    in a kept trajectory, in the observation the answer step rests on."""

    seed_id: str
    round: int
    strategy: Strategy
    question: str
    answer: str
    passages: tuple[Hit, ...]  # the evidence that states the answer (multi-hop: bridge passage first)
    bridge: str | None = None
    facts: tuple[str, ...] | None = None  # None: the answer itself; (): nothing (a refusal)
    alternatives: tuple[str, ...] = ()  # other strings that are the same answer (a conflict in either order)
    absent: tuple[str, ...] = ()  # a refusal's guesses: no passage a search retrieves may state one
    document: str | None = None  # the article the question names, which the answer must rest on

    @property
    def hops(self) -> int:
        return 2 if self.strategy == "multi_hop" else 1

    @property
    def task_type(self) -> str:
        return TASK_TYPES[self.strategy]

    @property
    def answers(self) -> tuple[str, ...]:
        return (self.answer, *self.alternatives)

    @property
    def support(self) -> tuple[str, ...]:
        """What the evidence must state for the answer to hold."""
        return (self.answer,) if self.facts is None else self.facts


class Roles(Protocol):
    """What a stage needs of the `SeedProcessor` running it. The role modules are looked up at
    each call (an optimizer or a test may swap one); `ask` runs one call as a role."""

    recipe: Recipe
    hash: str  # the recipe's content hash
    retriever: Retriever
    challenger: Callable[..., Any]
    weak: Callable[..., Any]
    strong: Callable[..., Any]
    verifier: Callable[..., Any]
    tagger: Callable[..., Any]

    def ask(self, role: RoleName, call: Callable[[], T]) -> T | None:
        """`call()` run as `role`; None when the reply could not be parsed (that item fails, not the run)."""
        ...


def rollout(recipe_hash: str, *parts: object) -> dict:
    """DSPy call config: a stable rollout id (cache key) and sampling seed per attempt."""
    return call_config(":".join([recipe_hash, *map(str, parts)]))


def as_question(text: str) -> str:
    text = " ".join(text.split()).rstrip("?. ")
    return text[:1].upper() + text[1:] + "?"


def number_passages(hits: list[Hit] | tuple[Hit, ...]) -> str:
    return "\n".join(f"[{i}] {title_of(h)}: {h.text}" for i, h in enumerate(hits, start=1))
