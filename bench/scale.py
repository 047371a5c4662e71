"""Index build and search at scale: a synthetic corpus of N passages, measured in one run.

Builds a corpus of N passages made of the demo corpus's sentences (or takes `--corpus FILE`),
indexes it in a child process, and prints build seconds and peak memory per million passages,
the index size on disk, load time, and queries/s at top 3 one at a time and in batches of 32
and 2,560 (Search-R1's GRPO request), then extrapolates the build to wiki-18's 21 million
passages. Pyserini (Lucene, Search-R1's own BM25 baseline) indexes and searches the same
corpus side by side, in a child process of the interpreter `--pyserini-python` names (by
default this one), measured the same way; without Pyserini the bench says so. Pyserini 0.22.1
is the last release whose Lucene runs on a JDK 11 or 17 (later ones need a JDK 21); it
imports its dense-retrieval dependencies too, so give it its own environment:

    python3 -m venv /opt/pyserini
    /opt/pyserini/bin/pip install pyjnius pandas scipy scikit-learn onnxruntime faiss-cpu torch transformers
    /opt/pyserini/bin/pip install --no-deps pyserini==0.22.1   # its other pins (nmslib, spacy) are not needed
    /opt/pyserini/bin/pip install datasets fastapi uvicorn      # only for --search-r1-server
    python3 -m bench.scale --passages 500000 [--corpus FILE] [--work DIR] [--pyserini-python /opt/pyserini/bin/python]
        [--search-r1-server SEARCH_R1_CHECKOUT]

`--search-r1-server` also starts Search-R1's own retrieval_server.py (`--retriever_name bm25`,
its code unchanged, only made to listen on a free loopback port instead of 0.0.0.0:8000) over
that Pyserini index and the corpus, and measures it through autodata's HTTP client
(`SearchClient`, what `--retriever-url` uses). That server returns the corpus file's row
`int(docid)`, so a `--corpus` file's ids must be its line numbers from 0, as the synthetic
corpus's are.

`--rank-bm25-queries K` also builds rank-bm25's BM25Okapi (in-process Python BM25, what
bench/retrieval.py compares against on the demo corpus) over the same corpus in a child process
and times K of the same queries one at a time (it has no batch API); it holds every passage's
tokens in memory, so keep K and N modest.

Needs the demo world for its sentences (`autodata world prepare`) unless `--corpus` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WIKI18_PASSAGES = 21_015_324

BUILD = """
import sys
from autodata.search.build import build_index
build_index(sys.argv[1], sys.argv[2], show_progress=False, shard_docs=int(sys.argv[3]))
import resource
print(f"peak_kb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")
"""


# Pyserini's side, run by the interpreter that has it: index the corpus file's folder (our corpus
# lines are its JsonCollection's {"id", "contents"}) with the options Search-R1's index_builder.py
# uses, then load and search as Search-R1 does (LuceneSearcher, BM25 k1=0.9 b=0.4, top 3). Prints
# one JSON line of measurements. No --storeRaw, as in Search-R1: its server then answers with the
# corpus file's lines, ids included (with raw documents stored it answers {title, text, contents},
# and autodata's client makes each passage's id from its contents).
PYSERINI = """
import json, resource, subprocess, sys, time
corpus_dir, index, queries_file = sys.argv[1:4]
start = time.perf_counter()
subprocess.run([sys.executable, "-m", "pyserini.index.lucene", "--collection", "JsonCollection", "--input",
                corpus_dir, "--index", index, "--generator", "DefaultLuceneDocumentGenerator", "--threads", "2"],
               check=True, capture_output=True)
build_s = time.perf_counter() - start
build_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
from pyserini.search.lucene import LuceneSearcher
start = time.perf_counter()
searcher = LuceneSearcher(index)
searcher.set_bm25(0.9, 0.4)
load_s = time.perf_counter() - start
queries = json.load(open(queries_file))
rates = {}
for batch in (1, 32, 2560):
    start = time.perf_counter()
    for i in range(0, len(queries), batch):
        part = queries[i : i + batch]
        if batch == 1:
            searcher.search(part[0], k=3)
        else:
            searcher.batch_search(part, [str(n) for n in range(len(part))], k=3, threads=2)
    rates[batch] = len(queries) / (time.perf_counter() - start)
print(json.dumps({"build_s": build_s, "build_gb": build_kb / 2**20, "load_s": load_s, "rates": rates}))
"""


# rank-bm25's side, as bench/retrieval.py runs it: the same tokenization as our index (English stop
# words, Snowball stemmer), BM25Okapi with k1=0.9 b=0.4, get_top_n(n=3) one query at a time. The
# build time counts reading, tokenizing and indexing the corpus. Prints one JSON line.
RANK_BM25 = """
import json, resource, sys, time
import Stemmer
from rank_bm25 import BM25Okapi
from autodata.search.build import STEMMER_LANGUAGE, tokenize
corpus_file, queries_file = sys.argv[1:3]
stemmer = Stemmer.Stemmer(STEMMER_LANGUAGE)
start = time.perf_counter()
corpus = [json.loads(line)["contents"] for line in open(corpus_file, encoding="utf-8")]
okapi = BM25Okapi(tokenize(corpus, stemmer), k1=0.9, b=0.4)
build_s = time.perf_counter() - start
queries = tokenize(json.load(open(queries_file)), stemmer)
start = time.perf_counter()
for query in queries:
    okapi.get_top_n(query, corpus, n=3)
rate = len(queries) / (time.perf_counter() - start)
peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps({"build_s": build_s, "peak_gb": peak_gb, "rate": rate}))
"""


def child_json(command: list[str], name: str) -> dict:
    """The JSON line a measuring child process prints last; its exit status and stderr if it fails."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{name} failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rank_bm25_side(corpus: Path, work: Path, queries: list[str]) -> dict:
    """rank-bm25's build seconds, peak resident GB and queries/s on `corpus` (see RANK_BM25)."""
    (work / "rank-bm25-queries.json").write_text(json.dumps(queries))
    return child_json([sys.executable, "-c", RANK_BM25, str(corpus), str(work / "rank-bm25-queries.json")], "rank-bm25")


def pyserini_side(python: str, corpus: Path, work: Path, queries: list[str]) -> dict | None:
    """Pyserini's measurements on `corpus` (see PYSERINI), or None when `python` lacks it."""
    if subprocess.run([python, "-c", "import pyserini"], capture_output=True).returncode:
        return None
    corpus_dir = work / "pyserini-corpus"
    corpus_dir.mkdir(exist_ok=True)
    (corpus_dir / "corpus.jsonl").unlink(missing_ok=True)
    (corpus_dir / "corpus.jsonl").symlink_to(corpus.resolve())
    (work / "queries.json").write_text(json.dumps(queries))
    index = work / "pyserini-index"
    shutil.rmtree(index, ignore_errors=True)
    measured = child_json([python, "-c", PYSERINI, str(corpus_dir), str(index), str(work / "queries.json")], "Pyserini")
    return {**measured, "disk_gb": folder_gb(index)}


# Search-R1's retrieval_server.py run as it is, but on argv[1]'s loopback port: it calls
# uvicorn.run(app, host="0.0.0.0", port=8000) and has no option for either.
SEARCH_R1 = """
import runpy, sys, uvicorn
port, serve = int(sys.argv[1]), uvicorn.run
uvicorn.run = lambda app, **_: serve(app, host="127.0.0.1", port=port)
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def search_r1_side(python: str, checkout: Path, corpus: Path, work: Path, queries: list[str]) -> dict:
    """Start time and queries/s (top 3, through autodata's HTTP client) of Search-R1's BM25
    server over the index `pyserini_side` built in `work`, stopped when measured."""
    import httpx

    from autodata.search import SearchClient
    from autodata.search.server import free_port

    script = checkout / "search_r1" / "search" / "retrieval_server.py"
    if not script.is_file():
        raise SystemExit(f"no {script}: --search-r1-server takes a Search-R1 checkout")
    port = free_port()
    command = [python, "-c", SEARCH_R1, str(port), str(script), "--index_path", str(work / "pyserini-index")]
    command += ["--corpus_path", str(corpus.resolve()), "--topk", "3", "--retriever_name", "bm25"]
    env = {**os.environ, "HF_DATASETS_CACHE": str(work / "hf-datasets")}  # its corpus copy, removed with work
    log_path = work / "search-r1-server.log"
    start = time.perf_counter()
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        while True:
            if server.poll() is not None:
                raise SystemExit(f"Search-R1's server exited ({server.returncode}): {log_path.read_text()[-2000:]}")
            try:
                httpx.get(f"http://127.0.0.1:{port}/docs").raise_for_status()
                break
            except httpx.TransportError:
                time.sleep(0.5)
        up_s = time.perf_counter() - start
        with SearchClient(f"http://127.0.0.1:{port}", timeout_s=600, max_retries=0, batch_size=2_560) as client:
            rates = {batch: queries_per_second(client, queries, batch) for batch in (1, 32, 2_560)}
    finally:
        server.terminate()
        server.wait(timeout=60)
    return {"up_s": up_s, "rates": rates}


def sentences_of(corpus: Path) -> tuple[list[str], list[str]]:
    """(titles, sentences) of a Search-R1 corpus file's passages."""
    titles, sentences = [], []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            title, _, text = json.loads(line)["contents"].partition("\n")
            titles.append(title)
            sentences += [s for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 4]
    return titles, sentences


def write_synthetic_corpus(out: Path, passages: int, titles: list[str], sentences: list[str], seed: int = 0) -> Path:
    """`passages` passages of a random title and 3 to 6 random sentences each (about 100 words)."""
    rng = random.Random(seed)
    with open(out, "w", encoding="utf-8") as f:
        for i in range(passages):
            text = " ".join(rng.choices(sentences, k=rng.randint(3, 6)))
            f.write(json.dumps({"id": str(i), "contents": f"{rng.choice(titles)}\n{text}"}) + "\n")
    return out


def build_in_child(corpus: Path, out: Path, shard_docs: int) -> tuple[float, float]:
    """(seconds, peak resident GB) of building the index in a fresh process."""
    start = time.perf_counter()
    command = [sys.executable, "-c", BUILD, str(corpus), str(out), str(shard_docs)]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"the index build failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return seconds, int(re.search(r"peak_kb=(\d+)", done.stdout).group(1)) / 2**20


def folder_gb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**30


def queries_per_second(index, queries: list[str], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(queries), batch):
        index.search(queries[i : i + batch], topk=3)
    return len(queries) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=500_000, help="synthetic passages to index (default 500000)")
    parser.add_argument("--corpus", type=Path, help="index this Search-R1 corpus file instead")
    parser.add_argument("--shard-docs", type=int, default=100_000, help="passages per build shard")
    parser.add_argument("--queries", type=int, default=2_560, help="queries per throughput measurement")
    parser.add_argument("--work", type=Path, help="folder for the corpus and index (default: a temporary one)")
    parser.add_argument(
        "--pyserini-python",
        default=sys.executable,
        help="an interpreter with pyserini installed, to measure it side by side (default: this one)",
    )
    parser.add_argument(
        "--search-r1-server",
        type=Path,
        metavar="CHECKOUT",
        help="a Search-R1 checkout: also measure its retrieval_server.py (bm25) over the Pyserini index",
    )
    parser.add_argument(
        "--rank-bm25-queries",
        type=int,
        default=0,
        metavar="K",
        help="also measure rank-bm25 (BM25Okapi) on K of the queries, one at a time (default 0: skip)",
    )
    args = parser.parse_args(argv)

    from autodata.search import BM25Index
    from autodata.settings import load_settings

    work = args.work or Path(tempfile.mkdtemp(prefix="autodata-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    demo = load_settings().demo_world_dir / "corpus.jsonl"
    if args.corpus:
        corpus = args.corpus
    elif demo.is_file():
        print(f"writing {args.passages:,} synthetic passages from the demo corpus's sentences ...", flush=True)
        corpus = write_synthetic_corpus(work / "corpus.jsonl", args.passages, *sentences_of(demo))
    else:
        raise SystemExit("No demo world for sentences: run `autodata world prepare`, or pass --corpus FILE.")
    passages = sum(1 for _ in open(corpus, "rb"))
    per_million = 1e6 / passages
    print(f"corpus: {passages:,} passages, {corpus.stat().st_size / 2**30:.2f} GB", flush=True)

    # Peak memory = a fixed part (one shard, the interpreter) + a part growing with the corpus:
    # two builds, over the first quarter and over all of it, tell them apart.
    quarter = work / "quarter.jsonl"
    with open(corpus, "rb") as src, open(quarter, "wb") as dst:
        dst.writelines(line for _, line in zip(range(passages // 4), src))
    small_s, small_gb = build_in_child(quarter, work / "index-quarter", args.shard_docs)
    out = work / "index"
    seconds, peak_gb = build_in_child(corpus, out, args.shard_docs)
    slope_gb = (peak_gb - small_gb) / (passages - passages // 4) * 1e6
    print(
        f"autodata build: {seconds:.0f} s ({seconds * per_million:.0f} s per million passages), "
        f"peak memory {peak_gb:.2f} GB (a quarter of the corpus: {small_gb:.2f} GB in {small_s:.0f} s; "
        f"growth {slope_gb:.2f} GB per million passages), index {folder_gb(out):.2f} GB on disk"
    )
    start = time.perf_counter()
    index = BM25Index.load(out)
    print(f"autodata load: {time.perf_counter() - start:.2f} s")
    rng = random.Random(1)
    _, sentences = sentences_of(corpus) if passages <= 200_000 else sentences_of(demo)
    queries = [" ".join(rng.choice(sentences).split()[:8]) for _ in range(args.queries)]
    ours = {}
    for batch in (1, 32, 2_560):
        ours[batch] = queries_per_second(index, queries, batch)
        print(f"autodata search top 3, batches of {batch:>5}: {ours[batch]:8.1f} queries/s")
    wiki_gb = peak_gb + slope_gb * (WIKI18_PASSAGES - passages) / 1e6
    print(
        f"extrapolated to wiki-18 ({WIKI18_PASSAGES:,} passages): build "
        f"{seconds * WIKI18_PASSAGES / passages / 3600:.1f} h, peak memory {wiki_gb:.1f} GB"
    )
    if args.rank_bm25_queries:
        timed = queries[: args.rank_bm25_queries]
        rank = rank_bm25_side(corpus, work, timed)
        print(
            f"rank-bm25 build: {rank['build_s']:.0f} s ({rank['build_s'] * per_million:.0f} s per million), "
            f"peak memory {rank['peak_gb']:.2f} GB; search top 3, one at a time: {rank['rate']:8.2f} queries/s "
            f"({len(timed)} queries)"
        )
        print(
            f"autodata / rank-bm25: queries/s one at a time {ours[1] / rank['rate']:.1f}x, "
            f"in batches of 2,560 {ours[2_560] / rank['rate']:.1f}x"
        )
    theirs = pyserini_side(args.pyserini_python, corpus, work, queries)
    if theirs is None:
        print(f"pyserini: not importable by {args.pyserini_python} (see --help): not measured")
    else:
        print(
            f"pyserini build: {theirs['build_s']:.0f} s ({theirs['build_s'] * per_million:.0f} s per million), "
            f"peak memory {theirs['build_gb']:.2f} GB, index {theirs['disk_gb']:.2f} GB on disk; "
            f"load {theirs['load_s']:.2f} s"
        )
        for batch, rate in theirs["rates"].items():
            print(f"pyserini search top 3, batches of {batch:>5}: {rate:8.1f} queries/s")
        print(
            f"autodata / pyserini: build time {seconds / theirs['build_s']:.2f}x, peak memory "
            f"{peak_gb / theirs['build_gb']:.2f}x, queries/s one at a time {ours[1] / theirs['rates']['1']:.2f}x, "
            f"in batches of 2,560 {ours[2_560] / theirs['rates']['2560']:.2f}x"
        )
        if args.search_r1_server:
            server = search_r1_side(args.pyserini_python, args.search_r1_server, corpus, work, queries)
            print(f"search-r1 server (bm25, over the pyserini index): up in {server['up_s']:.1f} s")
            for batch, rate in server["rates"].items():
                print(f"search-r1 server via autodata's client, top 3, batches of {batch:>5}: {rate:8.1f} queries/s")
            print(
                f"autodata in-process / search-r1 server: queries/s one at a time {ours[1] / server['rates'][1]:.2f}x, "
                f"in batches of 2,560 {ours[2_560] / server['rates'][2_560]:.2f}x"
            )
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
