"""Bootstrap intervals and paired differences on inputs whose answer is known."""

import random

import pytest

from evals.intervals import mean_interval, paired_difference


def test_a_constant_score_has_no_spread():
    estimate = mean_interval([[0.25] * 30])
    assert (estimate.mean, estimate.low, estimate.high, estimate.n, estimate.repeats) == (0.25, 0.25, 0.25, 30, 1)


def test_the_interval_of_a_mean_covers_it_and_narrows_with_more_questions():
    rng = random.Random(1)
    small = mean_interval([[rng.gauss(0, 1) for _ in range(20)]])
    large = mean_interval([[rng.gauss(0, 1) for _ in range(500)]])
    assert small.low < small.mean < small.high and large.low < large.mean < large.high
    assert large.half_width < small.half_width / 3  # about sqrt(25) = 5 times narrower
    assert large.low < 0 < large.high  # the true mean, 0, is inside


def test_a_paired_difference_cancels_what_the_questions_share():
    """Questions differ a lot in difficulty; the better side is better on every one by 0.1."""
    rng = random.Random(2)
    difficulty = [rng.uniform(-3, 3) for _ in range(40)]
    better = [[d + 0.1 + rng.gauss(0, 0.02) for d in difficulty]]
    worse = [[d for d in difficulty]]
    diff = paired_difference(better, worse)
    assert diff.above_zero and diff.low > 0.08 and diff.high < 0.12
    # scored independently, the same gap would be lost in the spread of difficulty
    assert mean_interval(better).low < mean_interval(worse).high


def test_a_tie_and_a_worse_side_do_not_separate():
    rng = random.Random(3)
    a = [[rng.gauss(0, 1) for _ in range(60)]]
    assert not paired_difference(a, a).above_zero and paired_difference(a, a).mean == 0
    worse = [[x - 0.5 for x in a[0]]]
    assert not paired_difference(worse, a).above_zero and paired_difference(worse, a).high < 0


def test_training_noise_across_repeats_widens_the_interval():
    """Per question the same mean, but repeats that disagree: the interval must cover that spread."""
    questions = [0.0] * 50
    steady = [questions, questions, questions]
    noisy = [[0.3] * 50, [-0.3] * 50, [0.0] * 50]  # each repeat shifted as a whole
    assert mean_interval(steady).half_width == 0
    assert mean_interval(noisy).half_width > 0.1
    assert mean_interval(noisy).repeats == 3


def test_unpaired_or_empty_inputs_are_refused():
    with pytest.raises(ValueError, match="same questions"):
        paired_difference([[1.0, 2.0]], [[1.0]])
    with pytest.raises(ValueError, match="non-empty"):
        mean_interval([])
