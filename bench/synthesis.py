"""Synthesis throughput against the scripted endpoint, and what early stopping saves.

The scripted OpenAI-compatible server answers every role after a fixed latency (in its
own process); the retriever is the in-process BM25 index over a small corpus. Prints
endpoint utilization: accepted items per minute against the endpoint-bound ideal (slots /
latency / calls per accepted item), and the synthesis process's CPU per LLM call (what
bounds calls per second per core). With `--executor threads` (default) it also prints
solver calls per accepted item with and without early stopping; with `--executor ray` it
runs on a local Ray with 1 and then 2 workers sharing the endpoint's slots.

    python3 -m bench.synthesis [--latency-ms 200] [--slots 32] [--seeds 320] [--in-flight SLOTS]
    python3 -m bench.synthesis --slots 256 --latency-ms 2000 --seeds 2560
    python3 -m bench.synthesis --executor ray
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

from autodata.llm import LLMSession
from autodata.recipe import Recipe
from autodata.search import BM25Index
from autodata.settings import ROLE_NAMES, load_settings
from autodata.synthesis import synthesize
from tests.conftest import ANSWERABLE, write_corpus
from tests.fakes.agents import ScriptedAgents
from tests.fakes.openai_server import ScriptedOpenAI


def serve(latency_s: float, ready, stop) -> None:
    with ScriptedOpenAI(reply=ScriptedAgents(), latency_s=latency_s) as fake:
        ready.put(fake.url)
        stop.wait()


def run(
    url: str, seeds: Path, index: BM25Index, recipe: Recipe, slots: int, in_flight: int, executor=None
) -> tuple[float, float, dict]:
    """Seconds, this process's CPU seconds, and the manifest of one synthesis run."""
    os.environ["AUTODATA_HOME"] = tempfile.mkdtemp(prefix="autodata-bench-")
    os.environ["AUTODATA_LLM_CACHE"] = "false"  # every call reaches the endpoint (also in Ray workers)
    for role in ROLE_NAMES:
        os.environ[f"AUTODATA_ROLES__{role.upper()}__BASE_URL"] = url
        os.environ[f"AUTODATA_ROLES__{role.upper()}__MODEL"] = "fake"
        os.environ[f"AUTODATA_ROLES__{role.upper()}__MAX_CONCURRENCY"] = str(slots)
    out = Path(tempfile.mkdtemp(prefix="autodata-bench-out-"))
    with LLMSession(load_settings()) as llms:
        start, cpu = time.perf_counter(), time.process_time()
        report = synthesize(
            seeds,
            out,
            recipe=recipe,
            retriever=index,
            llms=llms,
            concurrency=in_flight,
            show_progress=False,
            executor=executor,
        )
        return time.perf_counter() - start, time.process_time() - cpu, report.manifest


def report_utilization(label: str, args, elapsed: float, cpu: float, manifest: dict) -> None:
    calls = sum(cost["calls"] for cost in manifest["llm_totals"].values())
    accepted = manifest["items"]["accepted"]
    achieved = accepted / elapsed * 60
    ideal = args.slots / (args.latency_ms / 1000) / (calls / accepted) * 60
    print(
        f"{label}: {accepted} accepted, {calls / accepted:.1f} calls per accepted item; accepted items/min "
        f"{achieved:8.1f}, endpoint-bound ideal {ideal:8.1f}: utilization {achieved / ideal:.1%} (target >= 90%); "
        f"driver CPU {cpu / calls * 1000:.2f} ms per LLM call"
    )


def profile(url: str, seeds: Path, index: BM25Index, recipe: Recipe, args) -> None:
    import yappi

    yappi.set_clock_type("cpu")
    yappi.start()
    _, cpu, _ = run(url, seeds, index, recipe, args.slots, args.in_flight)
    yappi.stop()
    stats = sorted(yappi.get_func_stats(), key=lambda f: f.ttot, reverse=True)
    print(f"CPU under the profiler: {cpu:.1f} s; share of it per function, callees included:")
    for f in stats[: args.profile]:
        print(f"{f.ttot / cpu:7.1%}  {f.ncall:>8}  {f.module.split('site-packages/')[-1]}:{f.lineno} {f.name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument(
        "--seeds", type=int, default=320, help="enough per slot that start and end tails do not dominate"
    )
    parser.add_argument("--in-flight", type=int, help="seeds in flight (default: --slots, as `autodata synthesize`)")
    parser.add_argument("--executor", choices=["threads", "ray"], default="threads")
    parser.add_argument(
        "--profile",
        type=int,
        metavar="N",
        help="profile one threads run's CPU (all threads) with "
        "yappi (pip install yappi) and print the N functions with the most CPU, callees included",
    )
    args = parser.parse_args()
    args.in_flight = args.in_flight or args.slots

    work = Path(tempfile.mkdtemp(prefix="autodata-bench-world-"))
    index = BM25Index.build(write_corpus(work / "corpus.jsonl"), work / "index", show_progress=False)
    seeds = work / "seeds.json"
    seeds.write_text(
        json.dumps(
            [
                {
                    "id": f"b{i}",
                    "question": ANSWERABLE[i % len(ANSWERABLE)][0],
                    "golden_answers": [ANSWERABLE[i % len(ANSWERABLE)][1]],
                }
                for i in range(args.seeds)
            ]
        )
    )

    ready, stop = multiprocessing.Queue(), multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(args.latency_ms / 1000, ready, stop), daemon=True)
    server.start()
    try:
        url = ready.get(timeout=30)
        keep = Recipe().with_changes(strategies={"keep": 1, "rephrase": 0, "multi_hop": 0})
        print(
            f"{args.seeds} seeds ({args.in_flight} in flight), {args.slots} endpoint slots, {args.latency_ms:.0f} ms "
            f"per call"
        )
        if args.executor == "ray":
            import ray

            from autodata.ray_executor import RayExecutor

            class TimedRayExecutor(RayExecutor):
                """Notes when the workers are up: their start (imports on every worker) is not throughput."""

                def __init__(self, **kwargs):
                    self.made_at = time.perf_counter()
                    super().__init__(**kwargs)
                    TimedRayExecutor.made.append(self)

                def map(self, seeds):
                    self.mapping_from = time.perf_counter()
                    return super().map(seeds)

            ray.init(include_dashboard=False, log_to_driver=False)  # one local Ray for both runs
            for workers in (1, 2):
                timed = TimedRayExecutor.made = []
                elapsed, cpu, manifest = run(
                    url,
                    seeds,
                    index,
                    keep,
                    args.slots,
                    args.in_flight,
                    functools.partial(TimedRayExecutor, workers=workers),
                )
                startup = timed[0].mapping_from - timed[0].made_at
                print(f"ray, {workers} worker{'s' * (workers > 1)}: {startup:.1f} s to start the workers, not counted")
                report_utilization(
                    f"ray, {workers} worker{'s' * (workers > 1)}", args, elapsed - startup, cpu, manifest
                )
            ray.shutdown()
            return
        if args.profile:
            return profile(url, seeds, index, keep, args)
        elapsed, cpu, manifest = run(url, seeds, index, keep, args.slots, args.in_flight)
        report_utilization("threads", args, elapsed, cpu, manifest)

        per_item = {}
        for early in (True, False):
            recipe = keep.with_changes(acceptance={"early_stop": early})  # the default 3 attempts per solver
            _, _, manifest = run(url, seeds, index, recipe, args.slots, args.in_flight)
            per_role = manifest["llm_per_accepted_item"]
            per_item[early] = per_role["weak"]["calls"] + per_role["strong"]["calls"]
        saved = 1 - per_item[True] / per_item[False]
        print(
            f"solver calls per accepted item (3 attempts each): early stopping {per_item[True]:.1f}, "
            f"without {per_item[False]:.1f}: saves {saved:.0%} (target >= 30%)"
        )
    finally:
        stop.set()
        server.join(timeout=10)


if __name__ == "__main__":
    main()
