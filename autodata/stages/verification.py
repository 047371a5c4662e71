"""Stage 5: the verifier picks, among the strong solver's correct trajectories, the one to keep.

The verifier (`autodata.roles.Verifier`) rejects any trajectory that cheats; its result names
the trajectory kept, or the `reason` none was (`unverified`, `hint_leak`, `bad_thought`) and a
`detail` for people.
"""

from __future__ import annotations

from typing import Any

from autodata.stages.base import Candidate, Problem, Roles, rollout
from autodata.stages.solving import hinted_titles
from autodata.trajectory import Trajectory


def verify(roles: Roles, c: Candidate, trajectories: list[Trajectory]) -> Trajectory | Problem:
    """The trajectory to keep, or why none is kept."""
    config = rollout(roles.hash, c.seed_id, c.round, "judge")
    result = roles.ask(
        "judge",
        lambda: roles.verifier(
            question=c.question,
            answer=c.answer,
            trajectories=trajectories,
            config=config,
            bridge=c.bridge,
            hinted_titles=hinted_titles(roles.recipe, c),
        ),
    )
    if result is None:
        return Problem("unverified", "the judge's reply could not be parsed")
    if result.trajectory is not None:
        return result.trajectory
    return rejection_of(result)


def rejection_of(result: Any) -> Problem:
    """The `Problem` of a verifier result that kept no trajectory."""
    return Problem(result.reason, result.detail)
