"""Answer metrics with FlashRAG's normalization (the code Search-R1 and FlashRAG report with).

Each scorer takes one prediction and the list of golden answers and returns 0.0 or 1.0
(F1: a fraction). `score_answers` follows FlashRAG's metric contract: a dict of mean
scores plus the per-example scores it was averaged from.

`regex=True` treats golden answers as regular expressions, as FlashRAG does for
CuratedTREC: EM is a case-insensitive full match of the normalized prediction, SubEM a
search inside it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from autodata.answers import exact_match, normalize_answer, sub_exact_match

__all__ = ["exact_match", "f1_score", "normalize_answer", "score_answers", "sub_exact_match"]

_CLOSED_ANSWERS = ("yes", "no", "noanswer")  # F1 gives these no partial credit


def f1_score(prediction: str, golden_answers: Sequence[str]) -> float:
    """Best token-level F1 of the prediction against any golden answer."""
    predicted = normalize_answer(prediction)
    best = 0.0
    for golden in golden_answers:
        expected = normalize_answer(golden)
        if (predicted in _CLOSED_ANSWERS or expected in _CLOSED_ANSWERS) and predicted != expected:
            continue
        predicted_tokens, expected_tokens = predicted.split(), expected.split()
        overlap = sum((Counter(predicted_tokens) & Counter(expected_tokens)).values())
        if overlap == 0:
            continue
        precision = overlap / len(predicted_tokens)
        recall = overlap / len(expected_tokens)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def score_answers(
    predictions: Sequence[str], golden_answers: Sequence[Sequence[str]], *, regex: bool = False
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Mean EM, SubEM and F1 over aligned predictions, and the per-example scores.

    Example:
        >>> means, _ = score_answers(["The Beatles", "1999"], [["Beatles"], ["2000"]])
        >>> means["em"], means["subem"]
        (0.5, 0.5)
    """
    if len(predictions) != len(golden_answers):
        raise ValueError(f"{len(predictions)} predictions for {len(golden_answers)} answer lists")
    per_example = {
        "em": [exact_match(p, g, regex=regex) for p, g in zip(predictions, golden_answers)],
        "subem": [sub_exact_match(p, g, regex=regex) for p, g in zip(predictions, golden_answers)],
        "f1": [f1_score(p, g) for p, g in zip(predictions, golden_answers)],
    }
    n = len(predictions)
    means = {name: (sum(scores) / n if n else 0.0) for name, scores in per_example.items()}
    return means, per_example
