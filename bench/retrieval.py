"""Retrieval throughput on the demo corpus, measured in one run on the same queries.

Prints queries/s of our BM25 index against rank-bm25 (in-process), and through our
HTTP server with batches of 1 and 32, plus the server's added latency per batch and
where it goes (request and response JSON + validation on each side, the thread-pool hop
of the sync endpoint, and the rest: HTTP and ASGI on loopback), and queries/s for one
2,560-query request (Search-R1's GRPO step: 512 prompts x 5 rollouts).

    python3 -m bench.retrieval [--queries 2000] [--rank-bm25-queries 200]

Needs the demo world (`autodata world prepare`) and the dev extras (rank-bm25).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import bm25s
import httpx
import Stemmer
from anyio import to_thread
from rank_bm25 import BM25Okapi

from autodata.search import BM25Index, SearchClient
from autodata.search.protocol import SearchRequest, SearchResponse, hits_to_wire
from autodata.search.server import BackgroundServer, create_app
from autodata.seeds import load_seeds
from autodata.settings import load_settings


def per_second(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_ms(fn, repeat: int) -> float:
    return statistics.median(timed(fn) for _ in range(repeat)) * 1000


def overhead_parts(index: BM25Index, batch: list[str], repeat: int = 200) -> dict[str, float]:
    """Median ms per batch of each step the HTTP path adds to `index.search(batch)`, measured alone."""
    hits = index.search(batch, topk=3)
    body = json.dumps(SearchRequest(queries=batch, topk=3, return_scores=True).model_dump()).encode()
    wire = hits_to_wire(hits, return_scores=True)
    reply = wire.model_dump_json().encode()

    async def hop() -> float:  # a sync endpoint runs in anyio's thread pool: there and back
        return (
            statistics.median([await _timed_async(lambda: to_thread.run_sync(lambda: None)) for _ in range(repeat)])
            * 1000
        )

    return {
        "client: request to JSON": median_ms(
            lambda: json.dumps(SearchRequest(queries=batch, topk=3, return_scores=True).model_dump()).encode(), repeat
        ),
        "server: JSON to request + validation": median_ms(lambda: SearchRequest.model_validate_json(body), repeat),
        "server: thread-pool hop": asyncio.run(hop()),
        # what FastAPI does with a response_model: validate, dump in JSON mode, render
        "server: hits to response + JSON": median_ms(
            lambda: json.dumps(
                SearchResponse.model_validate(hits_to_wire(hits, return_scores=True)).model_dump(mode="json")
            ),
            repeat,
        ),
        "client: JSON to hits": median_ms(lambda: SearchResponse.model_validate_json(reply).hits(), repeat),
    }


async def _timed_async(make) -> float:
    start = time.perf_counter()
    await make()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=2000, help="queries for our index and the server")
    parser.add_argument("--rank-bm25-queries", type=int, default=200, help="rank-bm25 is slow: fewer queries")
    args = parser.parse_args()

    settings = load_settings()
    world = settings.world_dir
    index = BM25Index.load(settings.index_dir)
    questions = [item.question for item in load_seeds(world / "train.json")]
    queries = (questions * (args.queries // len(questions) + 1))[: args.queries]
    rank_queries = queries[: args.rank_bm25_queries]

    # rank-bm25 over the same corpus and the same tokenization (stopwords + Snowball stemmer).
    corpus = [json.loads(line)["contents"] for line in (world / "corpus.jsonl").open(encoding="utf-8")]
    stemmer = Stemmer.Stemmer("english")

    def tokenize(texts):
        return bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False)

    okapi = BM25Okapi(tokenize(corpus), k1=0.9, b=0.4)
    rank_tokens = tokenize(rank_queries)
    rank_s = timed(lambda: [okapi.get_top_n(q, corpus, n=3) for q in rank_tokens])
    ours_s = timed(lambda: index.search(queries, topk=3))
    ours_one_s = timed(lambda: [index.search([q], topk=3) for q in queries[:500]])

    with BackgroundServer(create_app(index, documents=len(index))) as server:
        with SearchClient(server.url, batch_size=1) as client:
            client.search(queries[:20])  # warm up the connection
            http1_s = timed(lambda: client.search(queries[:500], topk=3))
        batches = [queries[i : i + 32] for i in range(0, len(queries), 32)]
        with SearchClient(server.url, batch_size=32) as client:
            http32_latencies = []
            for batch in batches:
                http32_latencies.append(timed(lambda b=batch: client.search(b, topk=3)))
        local32 = [timed(lambda b=batch: index.search(b, topk=3)) for batch in batches]
        parts = overhead_parts(index, batches[0])
        # Search-R1's trainer sends one step's queries in one request, as plain JSON.
        grpo = (queries * (2560 // len(queries) + 1))[:2560]
        grpo_s = timed(
            lambda: httpx.post(
                server.url + "/retrieve", json={"queries": grpo, "topk": 3, "return_scores": True}, timeout=600
            )
        )
        grpo_local_s = timed(lambda: index.search(grpo, topk=3))

    ours_qps = per_second(len(queries), ours_s)
    rank_qps = per_second(len(rank_queries), rank_s)
    added_ms = (statistics.median(http32_latencies) - statistics.median(local32)) * 1000
    print(f"corpus: {len(index)} passages; queries: {len(queries)} NQ train questions, top-3")
    print(f"rank-bm25 (BM25Okapi), in-process:     {rank_qps:10.1f} queries/s  ({len(rank_queries)} queries)")
    print(f"autodata BM25 index, batch of {len(queries)}: {ours_qps:10.1f} queries/s")
    print(f"autodata BM25 index, one at a time:   {per_second(500, ours_one_s):10.1f} queries/s")
    print(f"  ratio ours / rank-bm25 (batched):    {ours_qps / rank_qps:10.1f}x   (target >= 100x)")
    print(f"  ratio ours / rank-bm25 (one query):  {per_second(500, ours_one_s) / rank_qps:10.1f}x")
    print(f"HTTP server, batches of 1:             {per_second(500, http1_s):10.1f} queries/s")
    print(f"HTTP server, batches of 32:            {per_second(len(queries), sum(http32_latencies)):10.1f} queries/s")
    print(f"  server overhead per batch of 32 (median HTTP - median in-process): {added_ms:.2f} ms (target < 5 ms)")
    for part, ms in parts.items():
        print(f"    {part:<40} {ms:6.3f} ms")
    print(f"    {'the rest: HTTP + ASGI on loopback':<40} {added_ms - sum(parts.values()):6.3f} ms")
    print(
        f"HTTP server, one request of 2,560:     {per_second(2560, grpo_s):10.1f} queries/s "
        f"(in-process {per_second(2560, grpo_local_s):.1f}; ratio {grpo_local_s / grpo_s:.2f})"
    )


if __name__ == "__main__":
    main()
