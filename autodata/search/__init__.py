"""Search: the Search-R1 protocol, an embedded BM25 index, its server and one client."""

from __future__ import annotations

import logging

from autodata.search.bm25 import BM25Index
from autodata.search.build import read_corpus
from autodata.search.client import SearchClient
from autodata.search.protocol import Hit, Retriever, format_hits

logger = logging.getLogger(__name__)

__all__ = ["BM25Index", "Hit", "Retriever", "SearchClient", "format_hits", "open_retriever", "read_corpus"]


def open_retriever(settings, *, url: str | None = None, index_dir=None, corpus=None) -> Retriever:
    """The retriever to search: `settings.url` or else `url` (a Search-R1 server), else the index at
    `settings.index_dir` or else `index_dir`. `settings` is a `RetrieverSettings`. A world's own
    index (`index_dir`, with its `corpus`) made by an older autodata is rebuilt first."""
    url = settings.url or (None if settings.index_dir else url)
    if url:
        return SearchClient(
            url, timeout_s=settings.timeout_s, max_retries=settings.max_retries, batch_size=settings.batch_size
        )
    if settings.index_dir:
        return BM25Index.load(settings.index_dir.expanduser())
    if corpus is not None and BM25Index.is_outdated(index_dir):
        logger.warning("the index at %s was built by an older autodata: rebuilding it from %s", index_dir, corpus)
        return BM25Index.build(corpus, index_dir)
    return BM25Index.load(index_dir.expanduser())
