"""Stage 1, before any LLM call: the seed's gates and its evidence pack (and the same held-out
gate for each candidate question the challenger writes, `paraphrase`).

A seed overlapping a held-out question would teach a dev/test answer (`contaminated_seed`); a
seed whose answer its own question's search does not reach cannot teach search-augmented
answering (`no_evidence`). Either way the seed costs no LLM call.
"""

from __future__ import annotations

from typing import NamedTuple

from autodata.answers import sub_exact_match
from autodata.recipe import SearchRecipe
from autodata.search.protocol import Hit, Retriever
from autodata.seeds import HeldOutQuestions, SeedItem
from autodata.stages.base import Candidate, Problem

NO_EVIDENCE = Problem("no_evidence", "no retrieved passage holds a golden answer")


class Evidence(NamedTuple):
    """The passages a search for the seed question returns, those stating `answer` first;
    `answer` is the first golden answer a passage states, None when none does."""

    passages: tuple[Hit, ...]
    answer: str | None


def contamination(held_out: HeldOutQuestions | None, seed: SeedItem) -> Problem | None:
    """`contaminated_seed` when the seed overlaps a held-out question."""
    if held_out is None or (found := held_out.overlap(seed)) is None:
        return None
    detail = f"overlaps held-out question {found['held_out_id']!r} ({found['overlap']:.0%} of its word 5-grams)"
    return Problem("contaminated_seed", detail)


def paraphrase(held_out: HeldOutQuestions | None, c: Candidate) -> Problem | None:
    """`paraphrase` when candidate `c` restates a held-out question with the same answer, in words
    the 5-gram gate does not catch (a question retrieved against the held-out questions)."""
    if held_out is None or (found := held_out.paraphrase(c.question, c.answers + c.support)) is None:
        return None
    detail = f"paraphrases held-out question {found['held_out_id']!r} (similarity {found['similarity']:.2f})"
    return Problem("paraphrase", detail)


def search_evidence(retriever: Retriever, search: SearchRecipe, seed: SeedItem) -> Evidence:
    """The evidence pack: one search for the seed question, the passages stating a golden answer first."""
    hits = retriever.search([seed.question], topk=search.evidence_passages)[0]
    for golden in seed.golden_answers:
        stating = [h for h in hits if sub_exact_match(h.contents, [golden])]
        if stating:
            return Evidence(tuple(stating + [h for h in hits if h not in stating]), golden)
    return Evidence(tuple(hits), None)
