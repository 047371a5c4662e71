"""An embedded BM25 index, built in bounded memory (`autodata.search.build`) and memory-mapped on load.

`autodata_index.json` records the corpus checksum and the parameters used, so a rebuild over
the same corpus can be skipped and a stale or foreign folder is detected.
"""

from __future__ import annotations

import json
import logging
import mmap
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import Stemmer

from autodata._io import sha256_file
from autodata.errors import CorpusError
from autodata.search.build import INDEX_FORMAT_VERSION, INDEX_META_FILE, STEMMER_LANGUAGE, build_index, tokenize
from autodata.search.protocol import Hit

logger = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every empty query at INFO


class BM25Index:
    """Search a BM25 index in-process; implements the `Retriever` protocol.

    Example:
        >>> index = BM25Index.build("corpus.jsonl", "index/")   # doctest: +SKIP
        >>> index.search(["who wrote hamlet"], topk=3)[0][0].title  # doctest: +SKIP
        '"Hamlet"'
    """

    def __init__(self, folder: Path, meta: dict):
        self.folder, self.meta = folder, meta
        self._vocab = {word: token for token, word in enumerate(json.loads((folder / "vocab.json").read_text("utf-8")))}
        # Column t of the token-major matrix: rows[indptr[t]:indptr[t + 1]], with their BM25 scores.
        # Plain ndarray views of the memory maps: slicing an np.memmap builds a memmap object each time,
        # which was a quarter of a query's time on the demo corpus.
        self._indptr, self._indices, self._data = (
            np.load(folder / f"postings.{part}.npy", mmap_mode="r").view(np.ndarray)
            for part in ("indptr", "rows", "scores")
        )
        self._offsets = np.load(folder / "corpus.offsets.npy", mmap_mode="r").view(np.ndarray)
        with open(folder / "corpus.jsonl", "rb") as f:
            self._corpus = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._stemmer = Stemmer.Stemmer(STEMMER_LANGUAGE)
        self._local = threading.local()  # per thread: a reusable buffer of scores

    def __len__(self) -> int:
        return int(self.meta["documents"])

    def __reduce__(self):
        """Pickled as its folder: a Ray worker memory-maps the same index instead of receiving a copy."""
        return type(self).load, (self.folder,)

    @classmethod
    def build(cls, corpus_path: Path, out_dir: Path, *, show_progress: bool = True, **options) -> BM25Index:
        """Index `corpus_path` into `out_dir` (see `autodata.search.build.build_index`) and open it."""
        build_index(corpus_path, out_dir, show_progress=show_progress, **options)
        return cls.load(out_dir)

    @classmethod
    def load(cls, index_dir: Path) -> BM25Index:
        """Open an index folder made by `build`; postings and passages are memory-mapped."""
        index_dir = Path(index_dir)
        meta_path = index_dir / INDEX_META_FILE
        if not meta_path.is_file():
            raise CorpusError(
                f"{index_dir} is not an autodata index (no {INDEX_META_FILE}). "
                "Build one with `autodata index build --corpus FILE --out DIR` or `autodata world prepare`."
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format_version") != INDEX_FORMAT_VERSION:
            raise CorpusError(f"{index_dir} was built by another autodata version; rebuild it.")
        try:
            return cls(index_dir, meta)
        except (OSError, ValueError) as err:
            raise CorpusError(f"Index folder {index_dir} is damaged ({err}); rebuild it.") from err

    @staticmethod
    def is_outdated(index_dir: Path) -> bool:
        """Whether `index_dir` holds an index of another format (an older autodata's)."""
        meta = Path(index_dir) / INDEX_META_FILE
        return (
            meta.is_file()
            and json.loads(meta.read_text(encoding="utf-8")).get("format_version") != INDEX_FORMAT_VERSION
        )

    def is_built_from(self, corpus_path: Path) -> bool:
        return self.meta.get("corpus_sha256") == sha256_file(corpus_path)

    def search(self, queries: Sequence[str], topk: int = 3) -> list[list[Hit]]:
        if topk < 1:
            raise ValueError(f"topk must be at least 1, got {topk}")
        if not queries:
            return []
        k = min(topk, len(self))
        results = []
        for words in tokenize(list(queries), self._stemmer):
            token_ids = [self._vocab[w] for w in words if w in self._vocab]  # unknown words are dropped
            if not token_ids:  # empty, stop words only, or no known word: nothing matches (as in Search-R1's BM25)
                results.append([])
                continue
            rows, scores = self._postings_scores(token_ids)
            try:
                ranked = rank(rows, scores, k, max_repeats=max(1, len(token_ids)))
            finally:
                scores[rows] = 0.0
            results.append([self._hit(row, score) for row, score in ranked])
        return results

    def _postings_scores(self, token_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(posting rows, dense scores): the rows holding any query token, and every row's score.

        Each token's precomputed BM25 contributions are one column of a sparse matrix
        (scores/rows/indptr), so a query sums only its own postings, into this thread's
        zeroed buffer of one score per passage (no passage-sized allocation per query; the
        caller zeroes `rows` again). A row holding several query tokens appears once per token.
        """
        scores = getattr(self._local, "scores", None)
        if scores is None:
            scores = self._local.scores = np.zeros(len(self))
        parts = []
        for t in token_ids:
            a, b = self._indptr[t], self._indptr[t + 1]
            rows = self._indices[a:b]
            scores[rows] += self._data[a:b]  # a token's rows are distinct
            parts.append(rows)
        return np.concatenate(parts), scores

    def _hit(self, row: int, score: float) -> Hit:
        passage = json.loads(self._corpus[int(self._offsets[row]) : int(self._offsets[row + 1])])
        return Hit(id=passage["id"], contents=passage["contents"], score=score)


def rank(rows: np.ndarray, scores: np.ndarray, k: int, *, max_repeats: int) -> list[tuple[int, float]]:
    """The `k` best `(row, score)` pairs among `rows`, best first, ties broken by the lower row.

    `rows` may repeat a row up to `max_repeats` times (once per query token it holds). Only
    rows that hold a query token are ranked: fewer than `k` match, fewer come back, as from
    Search-R1's BM25 server (no unrelated zero-score filler). Most rows score exactly 0, and
    numpy's partition slows down ~15x on such arrays, so only the posting rows are partitioned.
    """
    if len(rows) > k * max_repeats:
        # The (k * max_repeats)-th best entry bounds the k-th best distinct row from below.
        row_scores = scores[rows]
        threshold = -np.partition(-row_scores, k * max_repeats - 1)[k * max_repeats - 1]
        rows = rows[row_scores >= threshold]
    rows = np.fromiter(set(rows.tolist()), dtype=np.int64)  # a few dozen rows: np.unique costs more
    order = np.lexsort((rows, -scores[rows]))[:k]
    return [(int(rows[i]), float(scores[rows[i]])) for i in order]
