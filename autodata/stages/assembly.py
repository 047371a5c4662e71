"""Stage 7: the records a seed's rounds write, an accepted item or a rejection (`autodata.items`)."""

from __future__ import annotations

from autodata.items import AcceptedItem, Rejection, StrongSolving, Tags, WeakSolving
from autodata.recipe import Recipe, Strategy
from autodata.stages.base import Candidate, Problem
from autodata.stages.solving import Attempts
from autodata.trajectory import Trajectory


def accepted_item(
    recipe: Recipe, recipe_hash: str, c: Candidate, attempts: Attempts, tags: Tags, trajectory: Trajectory
) -> AcceptedItem:
    """The line of trajectories.jsonl for candidate `c`, verified with `trajectory` kept."""
    return AcceptedItem(
        id=f"{c.seed_id}-r{c.round}",
        seed_id=c.seed_id,
        round=c.round,
        strategy=c.strategy,
        hops=c.hops,
        question=c.question,
        answer=c.answer,
        bridge=c.bridge,
        passage_ids=[h.id for h in c.passages],
        tags=tags,
        weak=WeakSolving(mode=recipe.weak_mode, scores=attempts.weak_scores),
        strong=StrongSolving(hint_mode=recipe.hint_mode, hint=attempts.hint, scores=attempts.strong_scores),
        acceptance_rule=recipe.acceptance.rule,
        recipe_hash=recipe_hash,
        trajectory=trajectory,
    )


def rejection(
    recipe_hash: str,
    seed_id: str,
    problem: Problem,
    *,
    candidate: Candidate | None = None,
    round_no: int | None = None,
    strategy: Strategy | None = None,
) -> Rejection:
    """The line of rejected.jsonl for `problem`: a seed's (no round) or a round's, with its candidate if any."""
    return Rejection(
        seed_id=seed_id,
        round=round_no,
        strategy=strategy,
        reason=problem.reason,
        detail=problem.detail,
        question=candidate.question if candidate else None,
        answer=candidate.answer if candidate else None,
        recipe_hash=recipe_hash,
    )
