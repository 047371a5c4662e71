"""An embedded BM25 index (bm25s), persisted to a folder and memory-mapped on load.

Folder layout: bm25s' arrays and `corpus.jsonl` (written by bm25s), plus
`autodata_index.json` with the corpus checksum and the parameters used, so a rebuild
over the same corpus can be skipped and a stale or foreign folder is detected.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import bm25s
import numpy as np
import Stemmer
from pydantic import ValidationError
from tqdm import tqdm

from autodata._io import atomic_write_json, folder_written_whole, sha256_file
from autodata.errors import CorpusError
from autodata.search.protocol import Hit, Passage

logger = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every empty query at INFO

INDEX_META_FILE = "autodata_index.json"
INDEX_FORMAT_VERSION = 1
# Pyserini's BM25 defaults, which Search-R1's BM25 baselines use.
BM25_PARAMS = {"method": "lucene", "k1": 0.9, "b": 0.4}
STOPWORDS = "en"
STEMMER_LANGUAGE = "english"


def read_corpus(path: Path) -> Iterator[Passage]:
    """Yield the passages of a Search-R1 corpus JSONL file, validating every line.

    Raises:
        CorpusError: naming the file and line of the first bad record.
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"Corpus file {path} does not exist.")
    seen: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                passage = Passage.model_validate_json(line)
            except ValidationError as err:
                first = err.errors(include_url=False)[0]
                problem = (
                    "not JSON"
                    if first["type"] == "json_invalid"
                    else (f"{'.'.join(map(str, first['loc'])) or 'record'}: {first['msg']}")
                )
                raise CorpusError(
                    f"{path}, line {line_no}: {problem}. Each line must be "
                    '{"id": "...", "contents": "\\"Title\\"\\nText"}.'
                ) from err
            if not passage.contents.strip():
                raise CorpusError(f"{path}, line {line_no}: empty 'contents'.")
            if passage.id in seen:
                raise CorpusError(f"{path}, line {line_no}: duplicate id {passage.id!r}.")
            seen.add(passage.id)
            yield passage


class BM25Index:
    """Search a BM25 index in-process; implements the `Retriever` protocol.

    Example:
        >>> index = BM25Index.build("corpus.jsonl", "index/")   # doctest: +SKIP
        >>> index.search(["who wrote hamlet"], topk=3)[0][0].title  # doctest: +SKIP
        '"Hamlet"'
    """

    def __init__(self, retriever: bm25s.BM25, folder: Path, meta: dict):
        # Keep the corpus ourselves so that `retrieve` returns row numbers, not documents.
        self._corpus, retriever.corpus = retriever.corpus, None
        self._retriever = retriever
        # Plain ndarray views of the memory-mapped matrix: same pages, no np.memmap overhead per slice.
        self._data, self._indices, self._indptr = (
            np.asarray(retriever.scores[name]) for name in ("data", "indices", "indptr")
        )
        self._stemmer = Stemmer.Stemmer(STEMMER_LANGUAGE)
        self.folder = folder
        self.meta = meta

    def __len__(self) -> int:
        return int(self.meta["documents"])

    def __reduce__(self):
        """Pickled as its folder: a Ray worker memory-maps the same index instead of receiving a copy."""
        return type(self).load, (self.folder,)

    @classmethod
    def build(cls, corpus_path: Path, out_dir: Path, *, show_progress: bool = True) -> BM25Index:
        """Index `corpus_path` into `out_dir` (written whole, or not at all)."""
        corpus_path, out_dir = Path(corpus_path), Path(out_dir)
        passages = [
            {"id": p.id, "contents": p.contents}
            for p in tqdm(read_corpus(corpus_path), desc="reading corpus", unit=" docs", disable=not show_progress)
        ]
        if not passages:
            raise CorpusError(f"Corpus file {corpus_path} holds no passages.")
        tokens = bm25s.tokenize(
            [p["contents"] for p in passages],
            stopwords=STOPWORDS,
            stemmer=Stemmer.Stemmer(STEMMER_LANGUAGE),
            show_progress=show_progress,
        )
        retriever = bm25s.BM25(**BM25_PARAMS)
        retriever.index(tokens, show_progress=show_progress)
        meta = {
            "format_version": INDEX_FORMAT_VERSION,
            "documents": len(passages),
            "corpus_sha256": sha256_file(corpus_path),
            "corpus_file": str(corpus_path.resolve()),
            "bm25": BM25_PARAMS,
            "stopwords": STOPWORDS,
            "stemmer": STEMMER_LANGUAGE,
            "bm25s_version": bm25s.__version__,
        }
        with folder_written_whole(out_dir) as staging:
            retriever.save(staging, corpus=passages, show_progress=False)
            atomic_write_json(staging / INDEX_META_FILE, meta)
        logger.info("indexed %d passages into %s", len(passages), out_dir)
        return cls.load(out_dir)

    @classmethod
    def load(cls, index_dir: Path) -> BM25Index:
        """Open an index folder made by `build`; arrays and corpus are memory-mapped."""
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
            retriever = bm25s.BM25.load(index_dir, load_corpus=True, mmap=True, show_progress=False)
        except (OSError, ValueError) as err:
            raise CorpusError(f"Index folder {index_dir} is damaged ({err}); rebuild it.") from err
        return cls(retriever, index_dir, meta)

    def is_built_from(self, corpus_path: Path) -> bool:
        return self.meta.get("corpus_sha256") == sha256_file(corpus_path)

    def search(self, queries: Sequence[str], topk: int = 3) -> list[list[Hit]]:
        if topk < 1:
            raise ValueError(f"topk must be at least 1, got {topk}")
        if not queries:
            return []
        k = min(topk, len(self))
        tokens = bm25s.tokenize(
            list(queries), stopwords=STOPWORDS, stemmer=self._stemmer, show_progress=False, return_ids=False
        )
        results = []
        for query_tokens in tokens:
            token_ids = self._retriever.get_tokens_ids(query_tokens)  # unknown words are dropped
            if not token_ids:  # empty, stop words only, or no known word: nothing matches (as in Search-R1's BM25)
                results.append([])
                continue
            rows, scores = self._postings_scores(token_ids)
            ranked = rank(rows, scores, k, max_repeats=max(1, len(token_ids)))
            results.append([self._hit(row, score) for row, score in ranked])
        return results

    def _postings_scores(self, token_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(posting rows, dense scores): the rows holding any query token, and every row's score.

        bm25s stores each token's precomputed BM25 contributions as one column of a
        sparse matrix (data/indices/indptr), so a query sums only its own postings.
        A row holding several query tokens appears once per token in `rows`.
        """
        if not token_ids:
            return np.empty(0, dtype=np.int64), np.zeros(len(self))
        spans = [(self._indptr[t], self._indptr[t + 1]) for t in token_ids]
        rows = np.concatenate([self._indices[a:b] for a, b in spans])
        contributions = np.concatenate([self._data[a:b] for a, b in spans])
        return rows, np.bincount(rows, weights=contributions, minlength=len(self))

    def _hit(self, row: int, score: float) -> Hit:
        passage = self._corpus[row]
        return Hit(id=passage["id"], contents=passage["contents"], score=score)


def rank(rows: np.ndarray, scores: np.ndarray, k: int, *, max_repeats: int) -> list[tuple[int, float]]:
    """The `k` best `(row, score)` pairs among `rows`, best first, ties broken by the lower row.

    `rows` may repeat a row up to `max_repeats` times (once per query token it holds).
    Rows outside `rows` score 0: when fewer than `k` rows score, the lowest-numbered
    others fill up, exactly as a ranking over the whole dense array would. Most rows
    score exactly 0, and numpy's partition slows down ~15x on such arrays, so only the
    posting rows are partitioned.
    """
    if len(rows) > k * max_repeats:
        # The (k * max_repeats)-th best entry bounds the k-th best distinct row from below.
        row_scores = scores[rows]
        threshold = -np.partition(-row_scores, k * max_repeats - 1)[k * max_repeats - 1]
        rows = rows[row_scores >= threshold]
    rows = np.unique(rows)
    order = np.lexsort((rows, -scores[rows]))[:k]
    ranked = [(int(rows[i]), float(scores[rows[i]])) for i in order]
    if len(ranked) < k:
        taken = set(rows.tolist())
        fill = (row for row in range(len(scores)) if row not in taken)
        ranked += [(row, 0.0) for row in itertools.islice(fill, k - len(ranked))]
    return ranked
