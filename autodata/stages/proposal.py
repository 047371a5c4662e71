"""Stage 2: a candidate question for the round, by the round's strategy.

`keep` asks the seed question as it is; `rephrase` and `multi_hop` have the challenger write a
question from the evidence. A strategy is one function from a `Task` to a `Proposal`, listed in
`STRATEGIES`: adding one touches this stage (and the names in `autodata.recipe.Strategy`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from dataclasses import dataclass

import dspy

from autodata.answers import sub_exact_match
from autodata.recipe import Recipe, Strategy
from autodata.search.protocol import Hit
from autodata.seeds import SeedItem
from autodata.stages.base import Candidate, Problem, Roles, as_question, int_seed, number_passages, rollout, title_of

STRATEGY_GUIDES: dict[Strategy, str] = {
    "rephrase": "Rephrase: ask for the same answer as the seed question with new wording, using facts stated in "
    "the passages. Do not copy the seed question.",
    "multi_hop": "Multi-hop: the bridge entity is '{bridge}'. Describe it with facts from passage [1] without "
    "writing its name, and ask for the fact about it that passage [2] states.",
}


@dataclass(frozen=True)
class Task:
    """What one round asks for: a question about `seed` by `strategy`, grounded in `evidence`."""

    seed: SeedItem
    evidence: tuple[Hit, ...]  # the seed's evidence pack (`Evidence.passages`)
    answer: str  # the golden answer the evidence states (`Evidence.answer`)
    strategy: Strategy
    round: int
    feedback: str  # what was wrong with the previous round's candidate; empty at first

    @property
    def stating(self) -> tuple[Hit, ...]:
        """The passages of the evidence that state the answer."""
        return tuple(h for h in self.evidence if sub_exact_match(h.contents, [self.answer]))


@dataclass(frozen=True)
class Proposal:
    """The round's candidate, or why there is none; a candidate with a problem is rejected as it is."""

    candidate: Candidate | None
    problem: Problem | None = None


UNPARSEABLE = Proposal(None, Problem("invalid", "the challenger's reply could not be parsed"))


def pick_strategy(
    recipe: Recipe, recipe_hash: str, seed_id: str, round_no: int, tried: Collection[str]
) -> Strategy | None:
    """The round's strategy, drawn by the recipe's weights (`keep` at most once); None when
    none is left. `recipe_hash`: the recipe's content hash (the draw's seed)."""
    weights = {s: w for s, w in recipe.strategies.weights().items() if w > 0 and not (s == "keep" and s in tried)}
    if not weights:
        return None
    rng = random.Random(int_seed(f"{recipe_hash}:{seed_id}:{round_no}"))
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def propose(roles: Roles, task: Task) -> Proposal:
    return STRATEGIES[task.strategy](roles, task)


def keep(roles: Roles, task: Task) -> Proposal:
    """The seed question itself, with the first two passages stating its answer."""
    question = as_question(task.seed.question)
    return Proposal(Candidate(task.seed.id, task.round, "keep", question, task.answer, task.stating[:2]))


def rephrase(roles: Roles, task: Task) -> Proposal:
    """The challenger's question on the whole evidence pack, citing the passages it names."""
    passages = task.evidence
    reply = challenge(roles, task, passages, STRATEGY_GUIDES["rephrase"])
    if reply is None:
        return UNPARSEABLE
    cited = tuple(passages[n - 1] for n in reply.supporting_passages if 1 <= n <= len(passages))
    candidate = Candidate(task.seed.id, task.round, "rephrase", reply.question.strip(), reply.answer.strip(), cited)
    if not cited:
        return Proposal(candidate, Problem("invalid", "cites no passage of the evidence pack"))
    return Proposal(candidate)


def multi_hop(roles: Roles, task: Task) -> Proposal:
    """Two hops: a passage mentioning the answer passage's title (the bridge entity), then the answer
    passage; the challenger describes the bridge without naming it. Both passages are cited."""
    answer_passage = task.stating[0]
    first = find_bridge(roles, answer_passage)
    if first is None:
        return Proposal(None, Problem("invalid", "multi_hop: no passage mentions a bridge entity"))
    passages, bridge = (first, answer_passage), title_of(answer_passage)
    reply = challenge(roles, task, passages, STRATEGY_GUIDES["multi_hop"].format(bridge=bridge))
    if reply is None:
        return UNPARSEABLE
    question, answer = reply.question.strip(), reply.answer.strip()
    return Proposal(Candidate(task.seed.id, task.round, "multi_hop", question, answer, passages, bridge))


def find_bridge(roles: Roles, answer_passage: Hit) -> Hit | None:
    """A passage about another topic that mentions the answer passage's title."""
    bridge = title_of(answer_passage)
    for hit in roles.retriever.search([bridge], topk=roles.recipe.search.evidence_passages)[0]:
        if hit.id != answer_passage.id and sub_exact_match(hit.text, [bridge]):
            return hit
    return None


def challenge(roles: Roles, task: Task, passages: tuple[Hit, ...], guide: str) -> dspy.Prediction | None:
    """The challenger's reply (question, answer, supporting_passages) on `passages`; None if unparseable."""
    return roles.ask(
        "challenger",
        lambda: roles.challenger(
            strategy=guide,
            evidence=number_passages(passages),
            seed_question=task.seed.question,
            seed_answer=task.answer,
            feedback=task.feedback,
            config=rollout(roles.hash, task.seed.id, task.round, "challenger"),
        ),
    )


STRATEGIES: dict[Strategy, Callable[[Roles, Task], Proposal]] = {
    "keep": keep,
    "rephrase": rephrase,
    "multi_hop": multi_hop,
}
