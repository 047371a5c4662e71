"""95% intervals for scores and paired differences, by the bootstrap.

A score is a mean over questions (or seeds) of per-question numbers, measured in one or
more repeats (the proxy trained again with another seed and example order). Both sources
of noise count: each bootstrap draw resamples the questions (the same draw for both sides
of a paired difference, so what the questions share cancels) and, on each side on its
own, the repeats. With one repeat this is the plain paired bootstrap over questions.

Scores are given as `[[per-question numbers of repeat 1], [... repeat 2], ...]`; every
repeat, and both sides of a difference, list the same questions in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict

RESAMPLES = 4000
CONFIDENCE = 0.95

Scores = Sequence[Sequence[float]]  # [repeat][question]


@dataclass(frozen=True)
class Estimate:
    """A mean with its bootstrap interval; for a difference, `above_zero` says it separates."""

    mean: float
    low: float
    high: float
    n: int  # questions (or seeds)
    repeats: int

    @property
    def above_zero(self) -> bool:
        return self.low > 0

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def as_dict(self) -> dict:
        return asdict(self)

    def as_interval(self) -> Interval:
        return Interval(**self.as_dict())


class Interval(BaseModel):
    """An `Estimate` as records hold it (proxy.json's `score_interval`, a study row's intervals)."""

    model_config = ConfigDict(frozen=True)

    mean: float
    low: float
    high: float
    n: int  # questions (or seeds)
    repeats: int


def _matrix(scores: Scores) -> np.ndarray:
    matrix = np.asarray([list(r) for r in scores], dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError("scores must be a non-empty [repeat][question] table with the same questions in each repeat")
    return matrix


def _resampled_means(matrix: np.ndarray, questions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per draw: the mean over the drawn questions of the mean over independently drawn repeats."""
    draws = questions.shape[0]
    repeats = rng.integers(0, matrix.shape[0], size=(draws, matrix.shape[0]))
    per_question = matrix[repeats].mean(axis=1)  # (draws, questions)
    return np.take_along_axis(per_question, questions, axis=1).mean(axis=1)


def _estimate(samples: np.ndarray, mean: float, n: int, repeats: int) -> Estimate:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Estimate(round(mean, 6), round(float(low), 6), round(float(high), 6), n, repeats)


def mean_interval(scores: Scores, *, seed: int = 0, resamples: int = RESAMPLES) -> Estimate:
    """The mean of `scores` with its 95% bootstrap interval (questions and repeats resampled)."""
    matrix = _matrix(scores)
    rng = np.random.default_rng(seed)
    questions = rng.integers(0, matrix.shape[1], size=(resamples, matrix.shape[1]))
    return _estimate(_resampled_means(matrix, questions, rng), float(matrix.mean()), matrix.shape[1], matrix.shape[0])


def paired_difference(a: Scores, b: Scores, *, seed: int = 0, resamples: int = RESAMPLES) -> Estimate:
    """mean(a) - mean(b) with its 95% interval, paired over questions (one draw of questions for
    both sides), each side's repeats resampled on their own. `repeats` is the smaller count."""
    left, right = _matrix(a), _matrix(b)
    if left.shape[1] != right.shape[1]:
        raise ValueError(f"paired scores need the same questions: {left.shape[1]} against {right.shape[1]}")
    rng = np.random.default_rng(seed)
    questions = rng.integers(0, left.shape[1], size=(resamples, left.shape[1]))
    samples = _resampled_means(left, questions, rng) - _resampled_means(right, questions, rng)
    return _estimate(samples, float(left.mean() - right.mean()), left.shape[1], min(left.shape[0], right.shape[0]))
