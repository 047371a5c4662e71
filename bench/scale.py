"""Index build and search at scale: a synthetic corpus of N passages, measured in one run.

Builds a corpus of N passages made of the demo corpus's sentences (or takes `--corpus FILE`),
indexes it in a child process, and prints build seconds and peak memory per million passages,
the index size on disk, load time, and queries/s at top 3 one at a time and in batches of 32
and 2,560 (Search-R1's GRPO request), then extrapolates the build to wiki-18's 21 million
passages. Pyserini (Lucene) is measured side by side when it is installed (`pip install
pyserini` and a JDK 21); otherwise the bench says so.

    python3 -m bench.scale --passages 500000 [--corpus FILE] [--work DIR]

Needs the demo world for its sentences (`autodata world prepare`) unless `--corpus` is given.
"""

from __future__ import annotations

import argparse
import json
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
    for batch in (1, 32, 2_560):
        print(
            f"autodata search top 3, batches of {batch:>5}: {queries_per_second(index, queries, batch):8.1f} queries/s"
        )
    wiki_gb = peak_gb + slope_gb * (WIKI18_PASSAGES - passages) / 1e6
    print(
        f"extrapolated to wiki-18 ({WIKI18_PASSAGES:,} passages): build "
        f"{seconds * WIKI18_PASSAGES / passages / 3600:.1f} h, peak memory {wiki_gb:.1f} GB"
    )
    try:
        import pyserini  # noqa: F401
    except ImportError:
        print("pyserini: not installed (pip install pyserini, with a JDK 21): not measured")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
