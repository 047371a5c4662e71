"""`autodata synthesize --executor ray` on a local Ray instance, against the scripted endpoint.

Slow: Ray starts its own processes, and every worker imports autodata and DSPy.
"""

import functools
import json
import os
import re
import signal
import threading
import time

import pytest

from autodata.cli import main
from autodata.llm import LLMSession
from autodata.recipe import Recipe
from autodata.settings import ROLE_NAMES, load_settings
from autodata.synthesis import synthesize
from tests.conftest import ANSWERABLE, make_world, point_roles_at
from tests.fakes.agents import ScriptedAgents
from tests.fakes.openai_server import ScriptedOpenAI

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")

QUESTIONS = ANSWERABLE[:5] + [("what is the airspeed of an unladen swallow", "11 m/s")]  # no evidence for it
SLOTS = 2  # the endpoint's max_concurrency: shared by all workers


@pytest.fixture
def endpoint(monkeypatch, tmp_path):
    """The scripted endpoint (every call made: no cache), SLOTS slots per role, and 24 seeds."""
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "question": QUESTIONS[i % 6][0], "golden_answers": [QUESTIONS[i % 6][1]]}) + "\n"
            for i in range(24)
        )
    )
    monkeypatch.setenv("AUTODATA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AUTODATA_LLM_CACHE", "false")
    with ScriptedOpenAI(reply=ScriptedAgents(), latency_s=0.05) as fake:
        point_roles_at(monkeypatch, fake.url)
        for role in ROLE_NAMES:
            monkeypatch.setenv(f"AUTODATA_ROLES__{role.upper()}__MAX_CONCURRENCY", str(SLOTS))
        yield fake, seeds


def records(out, name):
    return sorted((json.loads(line) for line in (out / name).read_text().splitlines()), key=json.dumps)


def same_output(a, b) -> None:
    for name in ("trajectories.jsonl", "rejected.jsonl", "progress.jsonl"):
        assert records(a, name) == records(b, name), name
    assert sorted(json.load(open(a / "sft_dataset.json")), key=json.dumps) == sorted(
        json.load(open(b / "sft_dataset.json")), key=json.dumps
    )


def test_ray_cli_writes_what_the_single_process_run_writes(endpoint, tmp_path, corpus_file, monkeypatch, capsys):
    fake, seeds = endpoint
    monkeypatch.setenv("AUTODATA_WORLD", str(make_world(tmp_path / "world", corpus_file)))
    common = ["synthesize", "--seeds", str(seeds), "--recipe", "default", "--concurrency", "4"]
    assert main([*common, "--out", str(tmp_path / "threads")]) == 0
    assert fake.peak_in_flight == SLOTS
    fake.peak_in_flight = 0
    assert main([*common, "--out", str(tmp_path / "ray"), "--executor", "ray", "--workers", "2"]) == 0
    threads_line, ray_line = re.findall(r"Accepted \d+ items from 24 seeds", capsys.readouterr().out)
    assert threads_line == ray_line and threads_line != "Accepted 0 items from 24 seeds"
    same_output(tmp_path / "threads", tmp_path / "ray")
    assert fake.peak_in_flight <= SLOTS  # 2 workers with 2 seeds each: still SLOTS requests at most
    assert not ray.is_initialized()  # the command's own local Ray is shut down


def test_a_killed_ray_worker_loses_nothing_and_duplicates_nothing(endpoint, tmp_path, bm25_index):
    from autodata.ray_executor import RayExecutor

    fake, seeds = endpoint
    recipe = Recipe().with_changes(strategies={"keep": 1, "rephrase": 0, "multi_hop": 0})
    with LLMSession(load_settings()) as llms:
        synthesize(
            seeds,
            tmp_path / "threads",
            recipe=recipe,
            retriever=bm25_index,
            llms=llms,
            concurrency=4,
            show_progress=False,
        )

    made = []

    class Watched(RayExecutor):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            made.append(self)

        def __exit__(self, *exc):
            self.final = ray.get([limiter.state.remote() for limiter in self.limiters.values()])
            super().__exit__(*exc)

    killed = []

    def kill_worker_0_mid_run():
        progress = tmp_path / "ray" / "progress.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if made and progress.is_file() and len(progress.read_text().splitlines()) >= 4:
                pid = made[0].identities[0]["pid"]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_worker_0_mid_run)
    killer.start()
    fake.peak_in_flight = 0
    with LLMSession(load_settings()) as llms:
        report = synthesize(
            seeds,
            tmp_path / "ray",
            recipe=recipe,
            retriever=bm25_index,
            llms=llms,
            concurrency=4,
            show_progress=False,
            executor=functools.partial(Watched, workers=2),
        )
        usage = llms.usage.summary()
    killer.join()

    assert killed and report.seeds_run_now == 24
    executor = made[0]
    assert executor.identities[0]["pid"] != killed[0]  # Ray restarted the worker
    assert executor.deaths >= 1  # and the driver saw its seeds fail, and sent them again
    same_output(tmp_path / "threads", tmp_path / "ray")
    progress = [json.loads(line)["seed_id"] for line in (tmp_path / "ray" / "progress.jsonl").read_text().splitlines()]
    assert len(progress) == len(set(progress)) == 24  # each seed written once
    assert fake.peak_in_flight <= SLOTS
    assert all(sum(state["held"].values()) == 0 for state in executor.final)  # the dead worker's slots came back
    assert usage["strong"]["calls"] >= report.manifest["llm_totals"]["strong"]["calls"] > 0


def test_a_seed_that_keeps_killing_its_worker_is_rejected_and_the_job_goes_on(endpoint, tmp_path, bm25_index):
    """Fault injected: the retriever (shipped to the workers) kills its process on one seed's question.
    Ray restarts the worker each time; after SEED_DEATHS deaths the seed is written as rejected and the
    other seeds are all done; a re-run does not send it again."""
    from autodata.ray_executor import SEED_DEATHS, RayExecutor

    _, seeds = endpoint
    lines = seeds.read_text().splitlines()[:6]
    lines[2] = json.dumps({"id": "poison", "question": "who wrote the poison pen letters", "golden_answers": ["x"]})
    seeds.write_text("\n".join(lines) + "\n")

    class KillsOnPoison:  # defined here so that Ray ships it by value
        def __init__(self, index):
            self.index, self.driver = index, os.getpid()

        def search(self, queries, topk=3):
            if os.getpid() != self.driver and any("poison" in q for q in queries):
                os._exit(1)  # a worker's death, as a native crash on this seed would be
            return self.index.search(queries, topk=topk)

    recipe = Recipe().with_changes(strategies={"keep": 1, "rephrase": 0, "multi_hop": 0})

    def run():
        with LLMSession(load_settings()) as llms:
            return synthesize(
                seeds,
                tmp_path / "ray",
                recipe=recipe,
                retriever=KillsOnPoison(bm25_index),
                llms=llms,
                concurrency=1,
                show_progress=False,
                executor=functools.partial(RayExecutor, workers=1),
            )

    report = run()
    rejected = [json.loads(line) for line in (tmp_path / "ray" / "rejected.jsonl").read_text().splitlines()]
    died = [r for r in rejected if r["reason"] == "worker_died"]
    assert [r["seed_id"] for r in died] == ["poison"] and f"died {SEED_DEATHS} times" in died[0]["detail"]
    progress = [json.loads(line)["seed_id"] for line in (tmp_path / "ray" / "progress.jsonl").read_text().splitlines()]
    assert sorted(progress) == sorted(json.loads(line)["id"] for line in lines) and report.seeds_run_now == 6
    assert run().seeds_run_now == 0  # done: the re-run sends nothing, the poison seed included
