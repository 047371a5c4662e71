"""The acceptance rule, and when the solvers' sampling may stop: pure functions of the 0/1 scores so far.

A candidate is kept when, over `attempts_per_solver` attempts each, the weak solver scores below
`weak_max_accuracy`, the strong one at least `strong_min_accuracy`, and the gap is `min_gap` or
more (`rule_verdict`). With early stopping, attempts stop as soon as every outcome of the
attempts not made gives one verdict, so the verdict is the one all attempts would give.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar

from autodata.recipe import Acceptance

W = TypeVar("W")
S = TypeVar("S")

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
    weak_attempt: Callable[[int], W],
    strong_attempt: Callable[[int], S],
    a: Acceptance,
    score: Callable[[W | S], float] = float,
) -> tuple[list[W], list[S]]:
    """The attempts `next_solver` asks for, in order; attempt i of a solver is called with i.

    An attempt is its 0/1 score, or anything `score` reads the score from (a solver's attempt
    with its trajectory): what an attempt returned stays with its score.
    """
    weak: list[W] = []
    strong: list[S] = []
    while (solver := next_solver([score(w) for w in weak], [score(s) for s in strong], a)) is not None:
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
