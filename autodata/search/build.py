"""Building a BM25 index in bounded memory: shards of passages, then one token-major merge.

Pass 1 streams the corpus in shards of `shard_docs` passages: each shard's passages are
validated, copied to the index's `corpus.jsonl`, tokenized (bm25s' tokenizer: English stop
words, Snowball stemmer) and counted into (row, token, term frequency) postings, written whole
to the build folder beside the index (`.NAME.building/`). A killed build continues after its
last finished shard. Pass 2 scores every posting with BM25 (Lucene's variant, as bm25s and
Pyserini) from the global document count, average length and document frequencies, sorts each
shard's postings by token, and merges them into one token-major matrix block by block. Peak
memory grows with the vocabulary and one shard or block, not with the corpus text, which stays
on disk (memory-mapped through line offsets when searched).

Index folder: `autodata_index.json` (metadata), `vocab.json` (tokens in id order),
`postings.{indptr,rows,scores}.npy` (column `t` of the token-major matrix is
`rows[indptr[t]:indptr[t + 1]]`), `corpus.jsonl` and `corpus.offsets.npy` (byte offset of every
passage's line, and the file's end).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import bm25s
import numpy as np
import Stemmer
from pydantic import ValidationError
from tqdm import tqdm

from autodata._io import atomic_write_json, sha256_file
from autodata.errors import CorpusError
from autodata.search.protocol import Passage

logger = logging.getLogger(__name__)

INDEX_META_FILE = "autodata_index.json"
INDEX_FORMAT_VERSION = 2
# Pyserini's BM25 defaults, which Search-R1's BM25 baselines use.
BM25_PARAMS = {"method": "lucene", "k1": 0.9, "b": 0.4}
STOPWORDS = "en"
STEMMER_LANGUAGE = "english"
SHARD_DOCS = 100_000  # passages per shard: about 100 MB of memory while it is tokenized
MERGE_BLOCK = 1 << 22  # postings per merge block: about 100 MB of memory


def tokenize(texts: list[str], stemmer: Stemmer.Stemmer) -> list[list[str]]:
    """The words BM25 sees: lowercased, English stop words removed, stemmed (as bm25s does)."""
    return bm25s.tokenize(texts, stopwords=STOPWORDS, stemmer=stemmer, show_progress=False, return_ids=False)


def _passage(raw: bytes, path: Path, line_no: int) -> Passage:
    try:
        passage = Passage.model_validate_json(raw)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        problem = (
            "not JSON"
            if first["type"] == "json_invalid"
            else f"{'.'.join(map(str, first['loc'])) or 'record'}: {first['msg']}"
        )
        raise CorpusError(
            f'{path}, line {line_no}: {problem}. Each line must be {{"id": "...", "contents": "\\"Title\\"\\nText"}}.'
        ) from err
    if not passage.contents.strip():
        raise CorpusError(f"{path}, line {line_no}: empty 'contents'.")
    return passage


def _lines(path: Path, start: int = 0, line_no: int = 0) -> Iterator[tuple[Passage, int, int]]:
    """(passage, byte offset after its line, its line number) from byte `start` on, validating each."""
    if not path.is_file():
        raise CorpusError(f"Corpus file {path} does not exist.")
    with open(path, "rb") as f:
        f.seek(start)
        offset = start
        for raw in f:
            offset += len(raw)
            line_no += 1
            if raw.strip():
                yield _passage(raw, path, line_no), offset, line_no


def read_corpus(path: Path) -> Iterator[Passage]:
    """Yield the passages of a Search-R1 corpus JSONL file, validating every line.

    Raises:
        CorpusError: naming the file and line of the first bad record.
    """
    path, seen = Path(path), set()
    for passage, _, line_no in _lines(path):
        if passage.id in seen:
            raise CorpusError(f"{path}, line {line_no}: duplicate id {passage.id!r}.")
        seen.add(passage.id)
        yield passage


def _id_hash(passage_id: str) -> int:
    """64 bits of the id: a set of these finds duplicate ids in a 21M-passage corpus in ~1.5 GB."""
    return int.from_bytes(hashlib.blake2b(passage_id.encode(), digest_size=8).digest(), "little")


@dataclass
class _Pass1:
    """Where pass 1 stands: what finished shards hold, and where the next one starts."""

    shards: int = 0
    docs: int = 0
    input_end: int = 0  # byte offset in the source corpus after the last finished shard
    lines: int = 0
    corpus_end: int = 0  # bytes of the copied corpus.jsonl that finished shards wrote
    vocab: dict[str, int] = field(default_factory=dict)
    seen: set[int] = field(default_factory=set)


def _source_key(corpus: Path, shard_docs: int) -> dict:
    stat = corpus.stat()
    return {
        "corpus": str(corpus.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "shard_docs": shard_docs,
        "format_version": INDEX_FORMAT_VERSION,
    }


def _resume(work: Path, key: dict) -> _Pass1:
    """The finished shards of an earlier build of the same corpus in `work` (none if another)."""
    state = _Pass1()
    if (work / "build.json").is_file() and json.loads((work / "build.json").read_text()) == key:
        while (done := work / f"shard-{state.shards:05d}.json").is_file():
            info = json.loads(done.read_text(encoding="utf-8"))
            for token in info["new_tokens"]:
                state.vocab[token] = len(state.vocab)
            state.seen.update(np.load(work / f"shard-{state.shards:05d}.npz")["id_hash"].tolist())
            state.shards += 1
            state.docs, state.input_end, state.lines, state.corpus_end = (
                info["docs_end"],
                info["input_end"],
                info["lines"],
                info["corpus_end"],
            )
        if state.shards:
            logger.info("resuming the index build after %d finished shards (%d passages)", state.shards, state.docs)
    else:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        atomic_write_json(work / "build.json", key)
    with open(work / "corpus.jsonl", "ab") as f:  # drop what an unfinished shard appended
        f.truncate(state.corpus_end)
    return state


def _write_shard(
    work: Path, state: _Pass1, passages: list[Passage], input_end: int, lines: int, stemmer: Stemmer.Stemmer
) -> None:
    """Tokenize and count one shard, append its passages to the corpus copy, and record it whole."""
    vocab, new_tokens, flat, lengths = state.vocab, [], [], []
    for words in tokenize([p.contents for p in passages], stemmer):
        for word in words:
            token = vocab.get(word)
            if token is None:
                token = vocab[word] = len(vocab)
                new_tokens.append(word)
            flat.append(token)
        lengths.append(len(words))
    doclen = np.asarray(lengths, dtype=np.int32)
    docs = np.repeat(np.arange(len(passages), dtype=np.int64), doclen)
    pairs, tf = np.unique((docs << 32) | np.asarray(flat, dtype=np.int64), return_counts=True)
    lines_out = [
        (json.dumps({"id": p.id, "contents": p.contents}, ensure_ascii=False) + "\n").encode() for p in passages
    ]
    offsets = state.corpus_end + np.concatenate([[0], np.cumsum([len(b) for b in lines_out])]).astype(np.uint64)
    with open(work / "corpus.jsonl", "ab") as f:
        f.writelines(lines_out)
        f.flush()
        os.fsync(f.fileno())
    name = f"shard-{state.shards:05d}"
    with open(work / f"{name}.npz.tmp", "wb") as f:
        np.savez(
            f,
            rows=((pairs >> 32) + state.docs).astype(np.int32),
            tokens=(pairs & 0xFFFFFFFF).astype(np.int32),
            tf=tf.astype(np.int32),
            doclen=doclen,
            offsets=offsets[:-1],
            id_hash=np.asarray([_id_hash(p.id) for p in passages], dtype=np.uint64),
        )
    os.replace(work / f"{name}.npz.tmp", work / f"{name}.npz")
    state.shards += 1
    state.docs += len(passages)
    state.input_end, state.lines, state.corpus_end = input_end, lines, int(offsets[-1])
    atomic_write_json(
        work / f"{name}.json",
        {
            "docs_end": state.docs,
            "input_end": input_end,
            "lines": lines,
            "corpus_end": state.corpus_end,
            "new_tokens": new_tokens,
        },
    )


def _pass1(corpus: Path, work: Path, state: _Pass1, shard_docs: int, show_progress: bool) -> None:
    stemmer = Stemmer.Stemmer(STEMMER_LANGUAGE)
    size = corpus.stat().st_size
    batch: list[Passage] = []
    with tqdm(
        total=size,
        initial=state.input_end,
        unit="B",
        unit_scale=True,
        desc="indexing corpus",
        disable=not show_progress,
    ) as bar:
        for passage, offset, line_no in _lines(corpus, state.input_end, state.lines):
            digest = _id_hash(passage.id)
            if digest in state.seen:
                raise CorpusError(f"{corpus}, line {line_no}: duplicate id {passage.id!r}.")
            state.seen.add(digest)
            batch.append(passage)
            if len(batch) == shard_docs:
                done_before = state.input_end
                _write_shard(work, state, batch, offset, line_no, stemmer)
                bar.update(offset - done_before)
                batch = []
        if batch:
            _write_shard(work, state, batch, size, line_no, stemmer)
        bar.update(size - bar.n)


def _pass2(work: Path, out: Path, shards: int, vocab_size: int) -> dict:
    """Score, sort each shard by token, and merge into `out`'s postings; the corpus statistics."""
    doclen = np.concatenate([np.load(work / f"shard-{k:05d}.npz")["doclen"] for k in range(shards)])
    docs, avgdl = len(doclen), float(doclen.mean())
    df = np.zeros(vocab_size, dtype=np.int64)
    for k in range(shards):
        df += np.bincount(np.load(work / f"shard-{k:05d}.npz")["tokens"], minlength=vocab_size)
    idf = np.asarray([math.log(1 + (docs - n + 0.5) / (n + 0.5)) for n in df.tolist()], dtype=np.float32)
    indptr = np.concatenate([[0], np.cumsum(df)]).astype(np.int64)
    # Merge blocks: token ranges of about MERGE_BLOCK postings each.
    bounds = np.unique(
        np.concatenate([np.searchsorted(indptr, np.arange(0, indptr[-1], MERGE_BLOCK), "right") - 1, [vocab_size]])
    )
    k1, b = BM25_PARAMS["k1"], BM25_PARAMS["b"]
    starts = []  # per shard, where each block's postings begin in its sorted arrays
    for k in range(shards):
        shard = np.load(work / f"shard-{k:05d}.npz")
        tokens, rows, tf = shard["tokens"], shard["rows"], shard["tf"].astype(np.float64)
        scores = idf[tokens].astype(np.float64) * (tf / (k1 * ((1 - b) + b * doclen[rows] / avgdl) + tf))
        order = np.argsort(tokens, kind="stable")  # rows stay in ascending order within a token
        for part, values in (("tokens", tokens), ("rows", rows), ("scores", scores.astype(np.float32))):
            values[order].tofile(work / f"sorted-{k:05d}.{part}")
        starts.append(np.searchsorted(tokens[order], bounds))
    np.save(out / "postings.indptr.npy", indptr)
    _merge(work, out, starts, int(indptr[-1]))
    return {"documents": docs, "avgdl": avgdl, "vocabulary": vocab_size, "postings": int(indptr[-1])}


PARTS = {"tokens": np.int32, "rows": np.int32, "scores": np.float32}


def _read_block(work: Path, part: str, spans: list[tuple[int, int]]) -> np.ndarray:
    """One block's postings of every shard, in shard order, read from the shards' sorted files."""
    dtype = np.dtype(PARTS[part])
    return np.concatenate(
        [
            np.fromfile(work / f"sorted-{k:05d}.{part}", dtype=dtype, count=b - a, offset=a * dtype.itemsize)
            for k, (a, b) in enumerate(spans)
        ]
    )


def _merge(work: Path, out: Path, starts: list[np.ndarray], total: int) -> None:
    """Write the token-major rows and scores block by block (each a range of tokens), reading each
    shard's slice of the block from its file: memory holds one block, whatever the corpus size."""
    files = {p: open(out / f"postings.{p}.npy", "wb") for p in ("rows", "scores")}
    try:
        for p, f in files.items():
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.dtype(PARTS[p]).str, "fortran_order": False, "shape": (total,)}
            )
        for block in range(len(starts[0]) - 1):
            spans = [(int(s[block]), int(s[block + 1])) for s in starts]

            order = np.argsort(
                _read_block(work, "tokens", spans), kind="stable"
            )  # shards in order: rows ascend within a token
            for p, f in files.items():
                f.write(_read_block(work, p, spans)[order].tobytes())
    finally:
        for f in files.values():
            f.close()


def build_index(corpus_path: Path, out_dir: Path, *, show_progress: bool = True, shard_docs: int = SHARD_DOCS) -> None:
    """Index `corpus_path` into `out_dir` (replaced whole at the end; resumable until then).

    Raises:
        CorpusError: for a missing, empty or malformed corpus (the build folder is removed).
    """
    corpus, out = Path(corpus_path), Path(out_dir)
    if not corpus.is_file():
        raise CorpusError(f"Corpus file {corpus} does not exist.")
    work = out.with_name(f".{out.name}.building")
    state = _resume(work, _source_key(corpus, shard_docs))
    try:
        _pass1(corpus, work, state, shard_docs, show_progress)
        if not state.docs:
            raise CorpusError(f"Corpus file {corpus} holds no passages.")
    except CorpusError:
        shutil.rmtree(work, ignore_errors=True)
        raise
    final = work / "index"
    shutil.rmtree(final, ignore_errors=True)
    final.mkdir()
    stats = _pass2(work, final, state.shards, len(state.vocab))
    (work / "corpus.jsonl").rename(final / "corpus.jsonl")
    offsets = [np.load(work / f"shard-{k:05d}.npz")["offsets"] for k in range(state.shards)]
    np.save(final / "corpus.offsets.npy", np.concatenate([*offsets, [state.corpus_end]]).astype(np.uint64))
    (final / "vocab.json").write_text(json.dumps(list(state.vocab), ensure_ascii=False), encoding="utf-8")
    meta = {
        "format_version": INDEX_FORMAT_VERSION,
        **stats,
        "corpus_sha256": sha256_file(corpus),
        "corpus_file": str(corpus.resolve()),
        "bm25": BM25_PARAMS,
        "stopwords": STOPWORDS,
        "stemmer": STEMMER_LANGUAGE,
        "tokenizer": f"bm25s {bm25s.__version__}",
        "shard_docs": shard_docs,
    }
    atomic_write_json(final / INDEX_META_FILE, meta)
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    final.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    logger.info("indexed %d passages into %s", state.docs, out)
