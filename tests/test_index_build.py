"""Index builds in shards: an interrupted build resumes to the index an uninterrupted one makes."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from autodata.search import BM25Index
from autodata.search import build as index_build
from bench.scale import write_synthetic_corpus
from tests.conftest import FACTS, write_corpus


def same_index(a: BM25Index, b: BM25Index, queries: list[str], topk: int = 10) -> None:
    assert len(a) == len(b)
    for part in ("postings.indptr.npy", "postings.rows.npy", "postings.scores.npy", "corpus.offsets.npy"):
        assert np.array_equal(np.load(a.folder / part), np.load(b.folder / part)), part
    assert (a.folder / "corpus.jsonl").read_bytes() == (b.folder / "corpus.jsonl").read_bytes()
    assert a.search(queries, topk=topk) == b.search(queries, topk=topk)


def test_an_interrupted_build_resumes_after_its_last_finished_shard(tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "corpus.jsonl", FACTS)
    straight = BM25Index.build(corpus, tmp_path / "straight", show_progress=False, shard_docs=2)

    real, written = index_build._write_shard, []

    def dies_in_the_third_shard(work, state, passages, *args):
        if state.shards == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of a shard
        written.append(len(passages))
        return real(work, state, passages, *args)

    monkeypatch.setattr(index_build, "_write_shard", dies_in_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        BM25Index.build(corpus, tmp_path / "resumed", show_progress=False, shard_docs=2)
    assert not (tmp_path / "resumed").exists() and (tmp_path / ".resumed.building" / "shard-00001.json").is_file()

    monkeypatch.setattr(index_build, "_write_shard", lambda *a: (written.append(len(a[2])), real(*a))[1])
    resumed = BM25Index.build(corpus, tmp_path / "resumed", show_progress=False, shard_docs=2)
    assert sum(written) == len(FACTS)  # no passage was indexed twice
    assert not (tmp_path / ".resumed.building").exists()
    same_index(straight, resumed, [text[:40] for _, text in FACTS])


def test_a_build_over_another_corpus_starts_again(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", FACTS)
    work = tmp_path / ".index.building"
    work.mkdir()
    (work / "build.json").write_text(json.dumps({"corpus": "elsewhere"}))
    (work / "shard-00000.json").write_text("{}")  # not this corpus's: must not be read
    index = BM25Index.build(corpus, tmp_path / "index", show_progress=False, shard_docs=2)
    assert len(index) == len(FACTS) and not work.exists()


@pytest.mark.slow
def test_a_killed_build_of_300k_passages_resumes_to_the_same_index(tmp_path):
    """kill -9 in the middle of a 300,000-passage build; the re-run continues and matches a straight build."""
    rng = random.Random(5)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 9))) for _ in range(20_000)]
    sentences = [" ".join(rng.choices(words, k=rng.randint(6, 14))) + "." for _ in range(50_000)]
    corpus = write_synthetic_corpus(tmp_path / "corpus.jsonl", 300_000, words[:5_000], sentences)
    build = "import sys; from autodata.search.build import build_index; build_index(sys.argv[1], sys.argv[2], show_progress=False, shard_docs=20_000)"
    env = os.environ | {"PYTHONPATH": os.getcwd()}
    job = subprocess.Popen([sys.executable, "-c", build, str(corpus), str(tmp_path / "resumed")], env=env)
    work = tmp_path / ".resumed.building"
    deadline = time.monotonic() + 300
    while not (work / "shard-00004.json").is_file() and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.2)
    job.send_signal(signal.SIGKILL)
    job.wait()
    finished = len(list(work.glob("shard-*.json")))
    assert 5 <= finished < 15, finished  # killed mid-way, after some shards
    resumed = BM25Index.build(corpus, tmp_path / "resumed", show_progress=False, shard_docs=20_000)
    straight = BM25Index.build(corpus, tmp_path / "straight", show_progress=False, shard_docs=20_000)
    queries = [" ".join(rng.choice(sentences).split()[:5]) for _ in range(100)]
    same_index(straight, resumed, queries)
