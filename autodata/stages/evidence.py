"""Stage 1, before any LLM call: the seed's gates and its evidence pack.

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
from autodata.stages.base import Problem

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


def search_evidence(retriever: Retriever, search: SearchRecipe, seed: SeedItem) -> Evidence:
    """The evidence pack: one search for the seed question, the passages stating a golden answer first."""
    hits = retriever.search([seed.question], topk=search.evidence_passages)[0]
    for golden in seed.golden_answers:
        stating = [h for h in hits if sub_exact_match(h.contents, [golden])]
        if stating:
            return Evidence(tuple(stating + [h for h in hits if h not in stating]), golden)
    return Evidence(tuple(hits), None)
