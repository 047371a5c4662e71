"""Seed QA data in FlashRAG format: loading with clear errors, dedup, contamination.

A seed is `{"id": "329", "question": "...", "golden_answers": ["...", ...]}`; test files
may leave out `golden_answers`. Files are JSON (a list) or JSONL (one object a line).
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from math import ceil, log
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from autodata._io import atomic_write_json, atomic_write_jsonl
from autodata.answers import normalize_answer
from autodata.errors import SeedDataError, parser_limit

MAX_PROBLEMS_SHOWN = 10


class SeedItem(BaseModel):
    """One question with its accepted answers (none for a hidden test split)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    id: str = Field(min_length=1)
    question: str
    golden_answers: list[str] | None = None
    metadata: dict[str, Any] = {}

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_str(cls, value):
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("question")
    @classmethod
    def _question_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("question is blank")
        return value

    @model_validator(mode="after")
    def _valid_unicode(self) -> SeedItem:
        """JSON escapes can spell lone surrogates ("\\ud800"), which no UTF-8 file can hold."""
        try:
            json.dumps(self.model_dump(), ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"holds a lone surrogate ({err.object[err.start : err.end]!a}), not valid text") from None
        return self

    @field_validator("golden_answers")
    @classmethod
    def _answers_not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("golden_answers is empty")
            if any(not a.strip() for a in value):
                raise ValueError("golden_answers holds a blank answer")
        return value

    def to_json(self, *, with_answers: bool = True) -> dict[str, Any]:
        row: dict[str, Any] = {"id": self.id, "question": self.question}
        if with_answers and self.golden_answers is not None:
            row["golden_answers"] = list(self.golden_answers)
        if self.metadata:
            row["metadata"] = self.metadata
        return row


def _raw_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, record) pairs, read lazily; `where` is "line N" for JSONL and "record N" for a JSON list.

    `.jsonl` files are always read line by line; other files are a JSON list when they
    start with `[`, else JSONL (FlashRAG ships both under either name). Only JSONL is
    streamed: a JSON list is parsed whole.
    """
    if not path.is_file():
        raise SeedDataError(f"Seed file {path} does not exist.")
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
        if not head and not f.read(1):
            raise SeedDataError(f"{path}: the file is empty.")
        f.seek(0)
        if path.suffix != ".jsonl" and head.startswith(b"["):
            data = _parsed(f.read(), path, first_line=1)
            yield from ((f"record {i}", record) for i, record in enumerate(data))
            return
        for line_no, line in enumerate(f, start=1):
            if line.strip():
                yield f"line {line_no}", _parsed(line.rstrip(b"\r\n"), path, first_line=line_no)


def _parsed(raw: bytes, path: Path, *, first_line: int) -> Any:
    """JSON from `raw` (the file's bytes from `first_line` on); any way it cannot be read is a
    `SeedDataError` naming the file and line, never another exception."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        line = first_line + raw.count(b"\n", 0, err.start)
        raise SeedDataError(f"{path}, line {line}: not UTF-8 text ({err.reason}).") from err
    except json.JSONDecodeError as err:
        raise SeedDataError(f"{path}, line {first_line + err.lineno - 1}: not JSON ({err.msg}).") from err
    except (ValueError, RecursionError) as err:  # a number of over 4,300 digits, nesting too deep to parse
        too_long = re.search(rb"\d{4301}", raw)  # where Python's integer limit was met
        line = first_line + (raw.count(b"\n", 0, too_long.start()) if too_long else 0)
        raise SeedDataError(f"{path}, line {line}: not a record autodata can read ({parser_limit(err)}).") from None


def _checked(path: Path, require_answers: bool) -> Iterator[tuple[SeedItem | None, str | None]]:
    """(item, None) for each good record and (None, problem) for each bad one, in file order."""
    first_seen: dict[str, str] = {}
    for where, record in _raw_records(Path(path)):
        if not isinstance(record, dict):
            yield None, f"{where}: expected an object, got {type(record).__name__}"
            continue
        try:
            item = SeedItem.model_validate(record)
        except ValidationError as err:
            for e in err.errors(include_url=False):
                yield None, f"{where}: {_describe(e)}"
            continue
        if require_answers and item.golden_answers is None:
            yield None, f"{where}: missing 'golden_answers'"
        elif item.id in first_seen:
            yield None, f"{where}: duplicate id {item.id!r} (first at {first_seen[item.id]})"
        else:
            first_seen[item.id] = where
            yield item, None


def _raise_problems(path: Path, problems: list[str], count: int, total_problems: int) -> None:
    if total_problems:
        shown = "; ".join(problems)
        more = f" (and {total_problems - len(problems)} more)" if total_problems > len(problems) else ""
        raise SeedDataError(f"{path}: {total_problems} bad record(s): {shown}{more}")
    if not count:
        raise SeedDataError(f"{path}: no records.")


def load_seeds(path: Path, *, require_answers: bool = True) -> list[SeedItem]:
    """Load and validate a FlashRAG JSON or JSONL file.

    Raises:
        SeedDataError: listing each bad record by line (JSONL) or index (JSON list), e.g.
            "seeds.jsonl, line 4: missing 'question'".

    Example:
        >>> items = load_seeds("train.json")  # doctest: +SKIP
        >>> items[0].golden_answers  # doctest: +SKIP
        ['William III of England', 'William']
    """
    items, problems = [], []
    for item, problem in _checked(Path(path), require_answers):
        items.append(item) if item is not None else problems.append(problem)
    _raise_problems(Path(path), problems[:MAX_PROBLEMS_SHOWN], len(items), len(problems))
    return items


def count_seeds(path: Path, *, require_answers: bool = True) -> int:
    """Validate a seed file as `load_seeds` does, streaming it (memory: the ids); returns the count."""
    count, problems, total_problems = 0, [], 0
    for item, problem in _checked(Path(path), require_answers):
        if item is not None:
            count += 1
        else:
            total_problems += 1
            problems += [problem][: MAX_PROBLEMS_SHOWN - len(problems)]
    _raise_problems(Path(path), problems, count, total_problems)
    return count


def iter_seeds(path: Path, *, require_answers: bool = True) -> Iterator[SeedItem]:
    """The seeds of a file one at a time, for files too large to hold; check them first with `count_seeds`."""
    for item, problem in _checked(Path(path), require_answers):
        if problem:
            raise SeedDataError(f"{path}: {problem}")
        yield item


def _describe(error: dict) -> str:
    field = ".".join(str(p) for p in error["loc"])
    if error["type"] == "missing":
        return f"missing '{field}'"
    return f"'{field}': {error['msg'].removeprefix('Value error, ')}"


def write_seeds(path: Path, items: Iterable[SeedItem], *, with_answers: bool = True) -> None:
    """Write items as a JSON list (`.json`) or JSONL (`.jsonl`), atomically."""
    rows = [item.to_json(with_answers=with_answers) for item in items]
    if Path(path).suffix == ".jsonl":
        atomic_write_jsonl(path, rows)
    else:
        atomic_write_json(path, rows)


# --- near duplicates -------------------------------------------------------------


def _shingles(question: str, n: int = 2) -> frozenset[str]:
    words = normalize_answer(question).split()
    if len(words) <= n:
        return frozenset([" ".join(words)])
    return frozenset(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b)


def question_similarity(a: str, b: str) -> float:
    """Word-bigram Jaccard similarity of two questions after FlashRAG normalization."""
    return _jaccard(_shingles(a), _shingles(b))


def find_near_duplicates(items: Sequence[SeedItem], *, threshold: float = 0.8) -> list[tuple[str, str, float]]:
    """Pairs `(earlier_id, later_id, jaccard)` whose questions' word-bigram Jaccard >= threshold.

    Exact, not sampled: prefix filtering (rarest shingles first) means only pairs that
    could reach the threshold are compared, so this stays fast on tens of thousands.
    """
    sets = [_shingles(item.question) for item in items]
    frequency = Counter(s for shingle_set in sets for s in shingle_set)
    inverted: dict[str, list[int]] = defaultdict(list)
    pairs = []
    for j, shingle_set in enumerate(sets):
        ordered = sorted(shingle_set, key=lambda s: (frequency[s], s))
        prefix = ordered[: len(ordered) - ceil(threshold * len(ordered)) + 1]
        candidates = {i for s in prefix for i in inverted[s]}
        for i in sorted(candidates):
            similarity = _jaccard(sets[i], shingle_set)
            if similarity >= threshold:
                pairs.append((items[i].id, items[j].id, round(similarity, 4)))
        for s in prefix:
            inverted[s].append(j)
    return pairs


def remove_near_duplicates(
    items: Sequence[SeedItem], *, threshold: float = 0.8
) -> tuple[list[SeedItem], list[tuple[str, str, float]]]:
    """Keep the first of each group of near duplicates; returns (kept, dropped pairs)."""
    pairs = find_near_duplicates(items, threshold=threshold)
    dropped_ids = {later for _, later, _ in pairs}
    return [item for item in items if item.id not in dropped_ids], pairs


# --- contamination -----------------------------------------------------------------


def _ngrams(question: str, n: int) -> set[str]:
    words = normalize_answer(question).split()
    if len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


# Function words that carry no topic: dropped so "Who wrote X?" and "Which author wrote X?"
# compare on X. Question words ("in what year" = "when") are in here on purpose: both sides
# must share an answer anyway.
STOPWORDS = frozenset(
    """a an the of in on at to for from by with and or not no is are was were be been being am do
    does did has have had it its this that these those there their they them he she his her
    him i you we us our your my me as into onto than then so if but about over under after
    before what which who whom whose when where why how whats whos name named s year many much""".split()  # noqa: SIM905
)


def _terms(question: str) -> list[str]:
    """Lower-cased words, punctuation as a break ("Moby-Dick" -> moby, dick), minus stopwords."""
    return [word for word in re.findall(r"[^\W_]+", question.lower()) if word not in STOPWORDS]


def _unit(weights: dict[str, float]) -> dict[str, float]:
    norm = sum(w * w for w in weights.values()) ** 0.5
    return {term: w / norm for term, w in weights.items()} if norm else {}


class HeldOutQuestions:
    """The held-out (dev/test/confirm) questions, to test train questions one at a time (streaming).

    Two checks: `overlap` (shared word n-grams: copied text) and `paraphrase` (same answer and a
    high TF-IDF cosine: reworded text, which shares no 5-gram but still teaches the held-out answer).
    Questions shorter than `n` words count as one n-gram (so exact repeats always show).

    `min_paraphrase_similarity=0.5`: on the pairs in tests/test_paraphrase.py rewordings of a
    held-out question score 0.53-1.0 and different questions with its answer 0.0-0.43. Lexical
    similarity misses rewordings that share almost no content word (then `overlap` misses them too).
    """

    def __init__(
        self,
        held_out: Iterable[SeedItem],
        *,
        n: int = 5,
        min_overlap: float = 0.5,
        min_paraphrase_similarity: float = 0.5,
    ):
        self.n, self.min_overlap, self.size = n, min_overlap, 0
        self.min_paraphrase_similarity = min_paraphrase_similarity
        self._owners: dict[str, set[str]] = defaultdict(set)
        self._items: list[tuple[str, str]] = []  # (id, question)
        counts: list[Counter[str]] = []
        self._by_answer: dict[str, list[int]] = defaultdict(list)  # normalized golden answer -> items
        for item in held_out:
            self.size += 1
            for gram in _ngrams(item.question, n):
                self._owners[gram].add(item.id)
            # A hidden split has no answers: it never enters _by_answer, so never a paraphrase.
            for answer in {normalize_answer(a) for a in item.golden_answers or ()} - {""}:
                self._by_answer[answer].append(len(self._items))
            self._items.append((item.id, item.question))
            counts.append(Counter(_terms(item.question)))
        df = Counter(term for terms in counts for term in terms)
        # Smoothed idf, as if the query were one more document: a word no held-out question
        # uses gets the highest weight, so a query about something else scores low.
        self._unseen_idf = log(self.size + 1) + 1
        self._idf = {term: log((self.size + 1) / (k + 1)) + 1 for term, k in df.items()}
        self._vectors = [self._vector(terms) for terms in counts]

    def _vector(self, counts: Counter[str]) -> dict[str, float]:
        return _unit({term: k * self._idf.get(term, self._unseen_idf) for term, k in counts.items()})

    def overlap(self, item: SeedItem) -> dict[str, Any] | None:
        """`{"id", "held_out_id", "overlap"}` when `item` shares at least `min_overlap` of its
        n-grams with one held-out question (the one it overlaps most), else None."""
        grams = _ngrams(item.question, self.n)
        hits = Counter(owner for gram in grams for owner in self._owners.get(gram, ()))
        if not hits:
            return None
        other_id, shared = hits.most_common(1)[0]
        overlap = shared / len(grams)
        return (
            {"id": item.id, "held_out_id": other_id, "overlap": round(overlap, 4)}
            if overlap >= self.min_overlap
            else None
        )

    def paraphrase(self, question: str, answers: Sequence[str]) -> dict[str, Any] | None:
        """`{"held_out_id", "held_out_question", "similarity"}` for the held-out question most like
        `question` (TF-IDF cosine, 0 to 1) among those with a golden answer equal to one of
        `answers` after `normalize_answer` (the `exact_match` rule), when that similarity is at
        least `min_paraphrase_similarity`; else None."""
        if isinstance(answers, str):  # one answer, not its characters
            answers = [answers]
        candidates = {i for a in answers for i in self._by_answer.get(normalize_answer(a), ())}
        if not candidates:
            return None
        query = self._vector(Counter(_terms(question)))
        best, similarity = max(
            ((i, sum(w * self._vectors[i].get(term, 0.0) for term, w in query.items())) for i in candidates),
            key=lambda pair: (pair[1], -pair[0]),
        )
        if similarity < self.min_paraphrase_similarity:
            return None
        held_out_id, held_out_question = self._items[best]
        return {
            "held_out_id": held_out_id,
            "held_out_question": held_out_question,
            "similarity": round(min(similarity, 1.0), 4),
        }


def find_contamination(
    train: Sequence[SeedItem], held_out: Sequence[SeedItem], *, n: int = 5, min_overlap: float = 0.5
) -> list[dict[str, Any]]:
    """Train questions that share at least `min_overlap` of their word n-grams with a held-out one.

    Returns one record per contaminated train question: its id, the held-out id it
    overlaps most, and the overlap fraction.
    """
    index = HeldOutQuestions(held_out, n=n, min_overlap=min_overlap)
    return [found for item in train if (found := index.overlap(item)) is not None]
