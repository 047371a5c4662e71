"""The service with N workers against the scripted endpoint: trials per hour and API latency.

For each worker count, a fresh SQLite study database, the service and N `autodata worker`
processes (each with its own home, as on its own machine); one study is launched over
HTTP and timed to its end, while the API's latency (GET /studies/NAME) is sampled.
Prints trials/hour and the median and p90 latency per worker count, and each count's
throughput as a ratio to one worker, all from one run.

    python3 -m bench.service [--workers 1,2] [--trials 4] [--seeds-per-trial 4] [--latency-ms 200]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from autodata.search.server import free_port
from autodata.settings import ROLE_NAMES
from bench.synthesis import QUESTIONS, serve
from tests.conftest import make_world, write_corpus


def run(workers: int, *, world: Path, llm_url: str, trials: int, seeds: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"autodata-bench-service-{workers}-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTODATA_")} | {
        "AUTODATA_OPTUNA_STORAGE": f"sqlite:///{root / 'optuna.db'}",
        "AUTODATA_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "AUTODATA_WORLD": str(world),
        "LITELLM_LOCAL_MODEL_COST_MAP": "true",
    }
    for role in ROLE_NAMES:
        env |= {f"AUTODATA_ROLES__{role.upper()}__BASE_URL": llm_url, f"AUTODATA_ROLES__{role.upper()}__MODEL": "fake"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def start(*args, home):
        return subprocess.Popen(
            [sys.executable, "-m", "autodata.cli", *args],
            env=env | {"AUTODATA_HOME": str(home)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    processes = [start("service", "--port", str(port), home=root / "service")]
    try:
        while True:
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        study = {
            "name": "bench",
            "trials": trials,
            "scorer": "acceptance",
            "seeds_per_trial": seeds,
            "stages": [1.0],
            "rewrite_val_seeds": 0,
            "pruner": "none",
        }
        started = time.monotonic()
        httpx.post(f"{url}/studies", json=study, timeout=30).raise_for_status()
        processes += [start("worker", "--poll-s", "0.2", home=root / f"worker-{i}") for i in range(workers)]
        latencies = []
        while True:
            t0 = time.perf_counter()
            shown = httpx.get(f"{url}/studies/bench", timeout=30).json()
            latencies.append(time.perf_counter() - t0)
            if shown["state"] in ("done", "failed"):
                break
            time.sleep(0.1)
        seconds = time.monotonic() - started
        complete = sum(t["state"] == "COMPLETE" for t in shown["trials"])
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
    latencies.sort()
    return {
        "workers": workers,
        "seconds": seconds,
        "complete": complete,
        "trials_per_hour": complete / seconds * 3600,
        "api_p50_ms": statistics.median(latencies) * 1000,
        "api_p90_ms": latencies[int(0.9 * (len(latencies) - 1))] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2", help="worker counts to compare (default %(default)s)")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--seeds-per-trial", type=int, default=4)
    parser.add_argument("--latency-ms", type=float, default=200.0, help="the scripted endpoint's latency per call")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="autodata-bench-world-"))
    train = [(f"b{i}", q, a) for i, (q, a) in enumerate(QUESTIONS * 4)]
    world = make_world(folder / "world", write_corpus(folder / "corpus.jsonl"), train=train)
    ready, stop = multiprocessing.Queue(), multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(args.latency_ms / 1000, ready, stop), daemon=True)
    server.start()
    llm_url = ready.get(timeout=30)
    try:
        rows = [
            run(int(n), world=world, llm_url=llm_url, trials=args.trials, seeds=args.seeds_per_trial)
            for n in args.workers.split(",")
        ]
    finally:
        stop.set()
        shutil.rmtree(folder, ignore_errors=True)
    base = rows[0]["trials_per_hour"]
    print(
        f"study of {args.trials} trials x {args.seeds_per_trial} seeds, scripted endpoint at {args.latency_ms:.0f} ms, "
        f"SQLite storage, acceptance scorer; {os.cpu_count()} cores"
    )
    for row in rows:
        print(
            f"{row['workers']} worker(s): {row['complete']} trials in {row['seconds']:6.1f} s = "
            f"{row['trials_per_hour']:7.1f} trials/hour ({row['trials_per_hour'] / base:4.2f}x one worker); "
            f"API GET /studies/NAME p50 {row['api_p50_ms']:.1f} ms, p90 {row['api_p90_ms']:.1f} ms"
        )


if __name__ == "__main__":
    main()
