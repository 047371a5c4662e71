"""Stage 3: the programmatic quality checks a candidate passes before any solver sees it.

Each check is a named function of the candidate and the round's earlier questions, returning
the `Problem` or None; `CHECKS` runs them in order and the first problem rejects the candidate.
Adding a check is one function and one line in `CHECKS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from autodata.answers import normalize_answer, sub_exact_match
from autodata.seeds import question_similarity
from autodata.stages.base import Candidate, Problem

# Words of a question that talks to the solvers (reward hacking), matched as whole words:
# "Armstrong", "strongest" and "weakest" are legitimate questions.
SOLVER_DIRECTED = re.compile(
    r"\b(solvers?|weak|strong|ignore|instructions?|pretend|wrong answer|answer with)\b", re.IGNORECASE
)
NEAR_DUPLICATE_THRESHOLD = 0.8  # word-bigram Jaccard, as `autodata data check` uses by default
MAX_QUESTION_WORDS = 40
MAX_ANSWER_WORDS = 8

Check = Callable[[Candidate, Sequence[str]], Problem | None]


def one_question(c: Candidate, earlier: Sequence[str]) -> Problem | None:
    words = c.question.split()
    if not c.question.endswith("?") or c.question.count("?") != 1 or not 3 <= len(words) <= MAX_QUESTION_WORDS:
        return Problem("invalid", "not one question of 3-40 words ending with '?'")
    return None


def short_answer(c: Candidate, earlier: Sequence[str]) -> Problem | None:
    """The answer, or each fact a fixed-form answer reports, is 1-8 words."""
    if not c.answer.strip() or any(not f.strip() or len(f.split()) > MAX_ANSWER_WORDS for f in c.support):
        return Problem("invalid", f"answer must be 1-{MAX_ANSWER_WORDS} words")
    return None


def not_solver_directed(c: Candidate, earlier: Sequence[str]) -> Problem | None:
    if SOLVER_DIRECTED.search(c.question):
        return Problem("invalid", "the question addresses the solvers")
    return None


def answer_not_in_question(c: Candidate, earlier: Sequence[str]) -> Problem | None:
    for fact in c.support:
        answer = normalize_answer(fact)
        if answer and f" {answer} " in f" {normalize_answer(c.question)} ":
            return Problem("leak", "the answer appears in the question")
    return None


def bridge_not_in_question(c: Candidate, earlier: Sequence[str]) -> Problem | None:
    if c.bridge and f" {normalize_answer(c.bridge)} " in f" {normalize_answer(c.question)} ":
        return Problem("leak", "the multi-hop question names its bridge entity")
    return None


def answer_in_cited_passages(c: Candidate, earlier: Sequence[str]) -> Problem | None:
    answer_passages = c.passages[-1:] if c.hops == 2 else c.passages  # multi-hop: the second hop states it
    for fact in c.support:
        if not any(sub_exact_match(h.contents, [fact]) for h in answer_passages):
            return Problem("unsupported", "the answer is not in the cited passages")
    return None


def not_a_duplicate(c: Candidate, earlier: Sequence[str]) -> Problem | None:
    for question in earlier:
        if question_similarity(c.question, question) >= NEAR_DUPLICATE_THRESHOLD:
            return Problem("duplicate", f"repeats an earlier candidate: {question!r}")
    return None


CHECKS: tuple[Check, ...] = (
    one_question,
    short_answer,
    not_solver_directed,
    answer_not_in_question,
    bridge_not_in_question,
    answer_in_cited_passages,
    not_a_duplicate,
)


def screen(c: Candidate, earlier: Sequence[str]) -> Problem | None:
    """The first problem `CHECKS` find with candidate `c`, given the seed's earlier questions; None if none."""
    for check in CHECKS:
        if (problem := check(c, earlier)) is not None:
            return problem
    return None
