"""Endpoint throughput through autodata's LLM layer (limits, retries, accounting on).

Against the scripted OpenAI-compatible server with a fixed latency, N concurrent
slots and M requests, prints achieved requests/s against the ideal N / latency.

    python3 -m bench.endpoint [--latency-ms 200] [--slots 32] [--requests 640]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from autodata.llm import LLMSession
from autodata.settings import load_settings
from tests.fakes.openai_server import ScriptedOpenAI


def serve(latency_s: float, every: int, ready, stop) -> None:
    """The scripted server in its own process, so its work does not share our GIL."""

    def faults(call: int) -> int | None:
        return 429 if every and call % every == 0 else None

    with ScriptedOpenAI(reply=lambda req: "ok", latency_s=latency_s, faults=faults) as fake:
        ready.put(fake.url)
        stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--requests", type=int, default=640)
    parser.add_argument("--rate-limit-every", type=int, default=0, help="answer 429 to every k-th request (0: never)")
    args = parser.parse_args()

    every = args.rate_limit_every
    ready, stop = multiprocessing.Queue(), multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(args.latency_ms / 1000, every, ready, stop), daemon=True)
    server.start()
    try:
        url = ready.get(timeout=30)
        os.environ.update(
            {
                "AUTODATA_HOME": tempfile.mkdtemp(prefix="autodata-bench-"),
                "AUTODATA_ROLES__WEAK__BASE_URL": url,
                "AUTODATA_ROLES__WEAK__MODEL": "fake",
                "AUTODATA_ROLES__WEAK__MAX_CONCURRENCY": str(args.slots),
                "AUTODATA_ROLES__WEAK__MAX_RETRIES": "10",
            }
        )
        with LLMSession(load_settings()) as llms:
            client = llms.client("weak")
            client.chat([{"role": "user", "content": "warm up"}])
            start = time.perf_counter()
            with ThreadPoolExecutor(args.slots) as pool:
                list(pool.map(lambda i: client.chat([{"role": "user", "content": f"q{i}"}]), range(args.requests)))
            elapsed = time.perf_counter() - start
            usage = llms.usage.summary()["weak"]
    finally:
        stop.set()
        server.join(timeout=10)

    achieved = args.requests / elapsed
    ideal = args.slots / (args.latency_ms / 1000)
    print(
        f"{args.requests} requests, {args.slots} slots, {args.latency_ms:.0f} ms latency"
        + (f", 429 on every {every}th" if every else "")
    )
    print(f"achieved: {achieved:8.1f} requests/s")
    print(f"ideal:    {ideal:8.1f} requests/s (slots / latency)")
    print(f"ratio:    {achieved / ideal:8.1%}   (target >= 90% at 32 slots)")
    print(
        f"accounted calls {usage['calls'] - 1}, retries {usage['retries']}, errors {usage['errors']}, "
        f"p50 {usage['latency_p50_s']:.3f} s, p99 {usage['latency_p99_s']:.3f} s"
    )


if __name__ == "__main__":
    main()
