"""Early stopping of the solvers' attempts only saves calls: the verdict is the one all attempts give.

The sampling is simulated through the functions `SeedProcessor.solve` calls (`sample_solvers`,
`final_verdict`), with scripted 0/1 outcomes in place of the solvers.
"""

import itertools
from types import SimpleNamespace

import pytest

from autodata.pipeline import Candidate, SeedProcessor, final_verdict, rule_verdict, sample_solvers
from autodata.recipe import Acceptance, Recipe
from autodata.search.protocol import Hit

# The acceptance settings of the study's search space (`suggest_recipe` in optimizers/study.py).
SEARCH_SPACE = [
    {"attempts_per_solver": k, "strong_min_accuracy": strong, "weak_max_accuracy": weak, "min_gap": gap}
    for k in (1, 2, 3)
    for strong in (0.5, 0.65, 0.8)
    for weak in (0.34, 0.5, 0.67)
    for gap in (0.0, 0.2, 0.34)
]


def the_rule(weak: tuple[float, ...], strong: tuple[float, ...], k: int, a: Acceptance) -> str:
    """The rule as stated (README, Synthesis step 5), on all k attempts of each solver."""
    w, s = sum(weak) / k, sum(strong) / k
    if w >= a.weak_max_accuracy:
        return "too_easy"
    if s < a.strong_min_accuracy:
        return "too_hard"
    return "gap" if s - w < a.min_gap else "accepted"


def simulate(weak_outcomes, strong_outcomes, a: Acceptance) -> tuple[str, list[float], list[float]]:
    """The verdict and the scores of the attempts made, sampling as the pipeline does."""
    asked: dict[str, list[int]] = {"weak": [], "strong": []}

    def solver(name, outcomes):
        def attempt(i: int) -> float:
            asked[name].append(i)
            return outcomes[i]

        return attempt

    weak, strong = sample_solvers(solver("weak", weak_outcomes), solver("strong", strong_outcomes), a)
    assert asked == {"weak": list(range(len(weak))), "strong": list(range(len(strong)))}  # attempt i is rollout i, once
    return final_verdict(weak, strong, a), weak, strong


@pytest.mark.parametrize(
    "setting",
    SEARCH_SPACE,
    ids=lambda s: "k{attempts_per_solver}-s{strong_min_accuracy}-w{weak_max_accuracy}-g{min_gap}".format(**s),
)
def test_early_stopping_never_changes_the_verdict_nor_makes_more_calls(setting):
    early, every = Acceptance(**setting), Acceptance(**setting, early_stop=False)
    k = early.attempts_per_solver
    for weak_outcomes in itertools.product((0.0, 1.0), repeat=k):
        for strong_outcomes in itertools.product((0.0, 1.0), repeat=k):
            expected = the_rule(weak_outcomes, strong_outcomes, k, early)
            assert rule_verdict(round(sum(weak_outcomes)), round(sum(strong_outcomes)), early) == expected
            verdict, weak, strong = simulate(weak_outcomes, strong_outcomes, every)
            assert verdict == expected
            assert weak == list(weak_outcomes) and strong == (list(strong_outcomes) if expected != "too_easy" else [])
            verdict, weak_early, strong_early = simulate(weak_outcomes, strong_outcomes, early)
            case = (setting, weak_outcomes, strong_outcomes, weak_early, strong_early)
            assert verdict == expected, case
            assert len(weak_early) <= len(weak) and len(strong_early) <= len(strong), case


def test_a_weak_solver_out_of_reach_after_one_miss_does_not_turn_an_accepted_item_into_a_gap():
    """k=3, strong >= 0.65, weak < 0.67, gap >= 0.2: one weak miss puts 0.67 out of reach, but the
    weak solver could still score 2/3, and a strong 2/3 would then be a gap; a strong 3/3 is not."""
    a = Acceptance(attempts_per_solver=3, strong_min_accuracy=0.65, weak_max_accuracy=0.67, min_gap=0.2)
    verdict, weak, strong = simulate((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), a)
    assert verdict == "accepted" == the_rule((0.0,) * 3, (1.0,) * 3, 3, a)
    assert weak == [0.0] and strong == [1.0, 1.0, 1.0]  # 4 calls instead of 6


def test_the_weak_attempts_left_are_made_when_the_gap_hinges_on_them():
    """k=3, strong >= 0.5, weak < 0.67, gap >= 0.34: after a strong 3/3 a weak 2/3 would still be a gap."""
    a = Acceptance(attempts_per_solver=3, strong_min_accuracy=0.5, weak_max_accuracy=0.67, min_gap=0.34)
    assert simulate((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), a) == ("accepted", [0.0, 0.0], [1.0, 1.0, 1.0])
    assert simulate((0.0, 1.0, 1.0), (1.0, 1.0, 1.0), a) == ("gap", [0.0, 1.0, 1.0], [1.0, 1.0, 1.0])


def test_default_rule_stops_after_two_weak_misses_and_two_strong_successes():
    assert simulate((0.0,) * 3, (1.0,) * 3, Acceptance()) == ("accepted", [0.0, 0.0], [1.0, 1.0])
    assert simulate((1.0,) * 3, (1.0,) * 3, Acceptance()) == ("too_easy", [1.0, 1.0], [])


def test_an_unparseable_strong_reply_keeps_trajectories_and_scores_aligned():
    """Strong attempt 0 cannot be parsed, attempts 1 and 2 solve it: the verifier gets exactly those two."""
    hit = Hit(id="0", contents='"Hamlet"\nHamlet is a tragedy written by William Shakespeare.')
    candidate = Candidate("s1", 0, "keep", "Who wrote the tragedy hamlet?", "William Shakespeare", (hit,))
    processor = SeedProcessor(Recipe(), retriever=None, llms=None)
    solved = {
        i: SimpleNamespace(searches=[SimpleNamespace(observation=hit.contents)], answer="William Shakespeare")
        for i in (1, 2)
    }
    shown = []

    def strong(question, hint, config, known_answer, known_facts=None, secrets=()):
        i = int(config["rollout_id"].rsplit(":", 1)[1])
        return SimpleNamespace(trajectory=solved[i]) if i in solved else None  # None: what `_as` gives when unparseable

    def verifier(question, expected, trajectories, config):
        shown.extend(trajectories)
        return SimpleNamespace(trajectory=None, reason="unverified", detail="scripted")

    processor._as = lambda role, call: call()
    processor.weak = lambda question, config: SimpleNamespace(answer="I do not know")
    processor.strong, processor.verifier = strong, verifier
    assert processor.solve(candidate) == (None, "unverified", "scripted")
    assert len(shown) == 2 and shown[0] is solved[1] and shown[1] is solved[2]
