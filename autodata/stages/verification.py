"""Stage 5: the verifier picks, among the strong solver's correct trajectories, the one to keep.

The verifier (`autodata.roles.Verifier`) rejects any trajectory that cheats; its result names
the trajectory kept, or the `reason` none was and a `detail` for people. What the trajectory
must show depends on the candidate's task type (`expected_of`).
"""

from __future__ import annotations

from typing import Any

from autodata.recipe import Recipe
from autodata.roles.verifier import Expected
from autodata.stages.base import Candidate, Problem, Roles, rollout
from autodata.stages.solving import hinted_titles
from autodata.trajectory import Trajectory


def verify(
    roles: Roles, c: Candidate, trajectories: list[Trajectory], guesses: tuple[str, ...] = ()
) -> Trajectory | Problem:
    """The trajectory to keep, or why none is kept. `guesses`: the weak solver's wrong answers,
    which a refusal's searches may not retrieve (nor the challenger's guess, `c.absent`)."""
    config = rollout(roles.hash, c.seed_id, c.round, "judge")
    expected = expected_of(roles.recipe, c, guesses)
    result = roles.ask(
        "judge",
        lambda: roles.verifier(question=c.question, expected=expected, trajectories=trajectories, config=config),
    )
    if result is None:
        return Problem("unverified", "the judge's reply could not be parsed")
    if result.trajectory is not None:
        return result.trajectory
    return rejection_of(result)


def expected_of(recipe: Recipe, c: Candidate, guesses: tuple[str, ...] = ()) -> Expected:
    """What a kept trajectory for `c` must show (`autodata.roles.verifier.Expected`)."""
    return Expected(
        answers=c.answers,
        facts=c.support,
        together=c.strategy not in ("conflicting_evidence", "scope_ambiguity"),
        absent=tuple(dict.fromkeys(c.absent + guesses)) if not c.support else (),
        bridge=c.bridge,
        hop_passages=tuple(h.id for h in c.passages) if c.hops == 2 else (),
        hinted_titles=tuple(hinted_titles(recipe, c)),
        document=c.document,
    )


def rejection_of(result: Any) -> Problem:
    """The `Problem` of a verifier result that kept no trajectory."""
    return Problem(result.reason, result.detail)
