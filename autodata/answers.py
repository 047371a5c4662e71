"""Answer normalization and matching, FlashRAG's (the code Search-R1 and FlashRAG report with).

It lives in the core package because the inner loop needs it (does a passage state the
answer? does the question leak it?); `evals.metrics` builds the reported metrics on it.
`regex=True` treats golden answers as regular expressions, as FlashRAG does for CuratedTREC.
"""

from __future__ import annotations

import functools
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


# The fixed answer forms of the task types that do not answer with a bare fact. The eval
# recognises them by their normalized start (`answer_form`), so a model is credited for the
# behaviour (refusing, correcting, reporting a conflict) even where its values differ.
REFUSAL = "insufficient evidence"
_CORRECTION = "false premise:"
_CONFLICT = "conflicting evidence:"
_SCOPE = "ambiguous scope:"
_READING = re.compile(r"^(?P<value>[^()]+?)\s*\((?P<reading>[^()]+)\)$")
_AS_OF = re.compile(r"^(?P<value>.+?)\s*\(as of (?P<time>[^()]+)\)$")


def premise_correction(fact: str) -> str:
    """The answer that rejects a question's false premise: what the evidence says instead."""
    return f"{_CORRECTION} {fact}"


def conflict_report(first: str, second: str) -> str:
    """The answer that reports two values the evidence gives for one attribute."""
    return f"{_CONFLICT} {first}; {second}"


def scope_report(readings: Sequence[tuple[str, str]]) -> str:
    """The answer to a question whose scope is ambiguous: each reading's value, with the reading."""
    return f"{_SCOPE} " + "; ".join(f"{value} ({reading})" for value, reading in readings)


def split_readings(answer: str) -> list[tuple[str, str]] | None:
    """`[(value, reading), ...]` of 'V1 (R1); V2 (R2)' (with or without the scope phrase); None if
    any part is not 'VALUE (READING)'."""
    text = answer.strip()
    if normalize_answer(text).startswith(normalize_answer(_SCOPE)):
        text = text.split(":", 1)[1]
    parts = [_READING.match(part.strip()) for part in text.split(";")]
    if not all(parts):
        return None
    return [(found["value"].strip(), found["reading"].strip()) for found in parts]


def as_of(value: str, time: str) -> str:
    """A time-dependent answer with the time boundary the evidence gives."""
    return f"{value} (as of {time})"


def split_as_of(answer: str) -> tuple[str, str] | None:
    """`(value, time)` of an `as_of` answer; None for any other form."""
    found = _AS_OF.match(answer.strip())
    return (found["value"], found["time"].strip()) if found else None


def answer_form(answer: str | None) -> str:
    """Which fixed form an answer takes: "refusal", "correction", "conflict", "scope" or "fact"."""
    text = normalize_answer(answer or "")
    phrases = (("refusal", REFUSAL), ("correction", _CORRECTION), ("conflict", _CONFLICT), ("scope", _SCOPE))
    for form, phrase in phrases:
        if text == normalize_answer(phrase) or text.startswith(normalize_answer(phrase) + " "):
            return form
    return "fact"


# Words that say nothing about what a question asks: articles, auxiliaries, question words.
FUNCTION_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "so",
        "than",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "will",
        "with",
        "would",
    ]
)


@functools.lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def content_words(text: str) -> set[str]:
    """The stemmed words of `text` that carry content (what "about the same thing" compares)."""
    words = [w for w in normalize_answer(text).split() if w not in FUNCTION_WORDS]
    return set(_stemmer().stemWords(words))


def facts_of(answer: str) -> tuple[str, ...]:
    """What an answer in one of the fixed forms rests on: nothing for a refusal, the corrected
    fact, the two conflicting values, each reading's value, a value and its date, or the answer itself."""
    form, text = answer_form(answer), answer.strip()
    if form == "refusal":
        return ()
    if form == "scope":
        return tuple(value for value, _ in split_readings(text) or ())
    if form in ("correction", "conflict"):
        rest = text.split(":", 1)[1] if ":" in text else ""
        return tuple(v.strip() for v in rest.split(";") if v.strip()) if form == "conflict" else (rest.strip(),)
    return split_as_of(text) or (text,)
