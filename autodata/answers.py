"""Answer normalization and matching, FlashRAG's (the code Search-R1 and FlashRAG report with).

It lives in the core package because the inner loop needs it (does a passage state the
answer? does the question leak it?); `evals.metrics` builds the reported metrics on it.
`regex=True` treats golden answers as regular expressions, as FlashRAG does for CuratedTREC.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golden_answers: Sequence[str], *, regex: bool = False) -> float:
    """1.0 when the normalized prediction equals some normalized golden answer."""
    predicted = normalize_answer(prediction)
    for golden in golden_answers:
        if regex:
            if re.fullmatch(golden, predicted, flags=re.IGNORECASE):
                return 1.0
        elif normalize_answer(golden) == predicted:
            return 1.0
    return 0.0


def sub_exact_match(prediction: str, golden_answers: Sequence[str], *, regex: bool = False) -> float:
    """1.0 when some normalized golden answer occurs inside the normalized prediction."""
    predicted = normalize_answer(prediction)
    for golden in golden_answers:
        if regex:
            if re.search(golden, predicted, flags=re.IGNORECASE):
                return 1.0
        elif normalize_answer(golden) in predicted:
            return 1.0
    return 0.0
