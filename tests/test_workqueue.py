"""The service's work queue under faults: lost leases, failures, an old table, takeovers across homes, SIGTERM."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from autodata.service import run_worker
from autodata.settings import load_settings
from autodata.workqueue import LeaseLost, WorkQueue
from tests.conftest import point_roles_at
from tests.fakes.agents import ScriptedAgents
from tests.fakes.openai_server import ScriptedOpenAI


def make_stale(queue: WorkQueue, work_id: str) -> None:
    """What an hour without heartbeats (a paused or lost worker) leaves in the row."""
    with queue.engine.begin() as db:
        db.execute(text("UPDATE autodata_work SET heartbeat = heartbeat - 3600 WHERE id = :id"), {"id": work_id})


def test_a_worker_that_lost_its_lease_cannot_beat_finish_or_fail(tmp_path):
    queue = WorkQueue(f"sqlite:///{tmp_path / 'q.db'}")
    job = queue.submit("synthesize", {"limit": 1})
    first = queue.claim("w1")
    make_stale(queue, job)
    second = queue.claim("w2")
    assert (first.lease, second.lease) == (1, 2) and second.owner == "w2"
    for write in (lambda: queue.beat(first), lambda: queue.finish(first, {}), lambda: queue.fail(first, "boom")):
        with pytest.raises(LeaseLost, match=f"work {job} was taken over"):
            write()
    row = queue.get(job)
    assert (row.state, row.owner, row.attempts, row.error, row.result) == ("running", "w2", 0, None, None)
    queue.finish(second, {"ok": True})
    assert queue.get(job).state == "done"


def test_attempts_count_failures_not_the_workers_that_join(tmp_path):
    queue = WorkQueue(f"sqlite:///{tmp_path / 'q.db'}")
    study = queue.submit("study", {"name": "s", "trials": 2})
    joined = [queue.claim(f"w{i}") for i in range(4)]  # every free worker joins a study
    assert {w.id for w in joined} == {study} and queue.get(study).attempts == 0
    queue.fail(joined[0], "one")
    queue.fail(joined[1], "two")
    assert (queue.get(study).state, queue.get(study).attempts) == ("queued", 2)
    queue.fail(joined[2], "three")
    assert (queue.get(study).state, queue.get(study).error) == ("failed", "three")


def test_a_queue_made_before_leases_were_numbered_still_opens(tmp_path):
    db = tmp_path / "q.db"
    with sqlite3.connect(db) as old:
        old.execute(
            "CREATE TABLE autodata_work (id VARCHAR(32) PRIMARY KEY, kind VARCHAR(16) NOT NULL, spec TEXT NOT NULL, "
            "state VARCHAR(16) NOT NULL, owner VARCHAR(128), attempts INTEGER NOT NULL, heartbeat FLOAT, "
            "progress TEXT, result TEXT, error TEXT, created FLOAT NOT NULL, updated FLOAT NOT NULL)"
        )
        old.execute(
            "INSERT INTO autodata_work VALUES ('old', 'synthesize', '{}', 'queued', NULL, 1, NULL, NULL, NULL, "
            "NULL, 1.0, 1.0)"
        )
    queue = WorkQueue(f"sqlite:///{db}")
    work = queue.claim("w")
    assert (work.id, work.lease, work.attempts) == ("old", 1, 1)


def test_a_job_taken_over_from_another_home_resumes_the_shared_jobs_folder(study_world, tmp_path, monkeypatch):
    shared = tmp_path / "shared-jobs"
    monkeypatch.setenv("AUTODATA_JOBS_DIR", str(shared))
    monkeypatch.setenv("AUTODATA_LLM_CACHE", "false")
    monkeypatch.setenv("AUTODATA_OPTUNA_STORAGE", f"sqlite:///{tmp_path / 'team-queue.db'}")  # the team's database
    settings_a = load_settings()
    queue = WorkQueue(settings_a.effective_optuna_storage)
    job = queue.submit("synthesize", {"recipe": "default", "limit": 2})
    lost = queue.claim("machine-a")  # machine A starts the job, finishes its first seed, then goes silent
    from autodata import api

    api.synthesize(shared / job, limit=1, settings=settings_a, show_progress=False)
    first_seed = (shared / job / "progress.jsonl").read_text()
    make_stale(queue, job)

    monkeypatch.setenv("AUTODATA_HOME", str(tmp_path / "machine-b-home"))
    assert run_worker(load_settings(), name="machine-b", once=True) == 1
    done = queue.get(job)
    assert (done.state, done.owner, done.result["out"]) == ("done", "machine-b", str(shared / job))
    assert done.result["progress"]["seeds_done"] == 2
    assert (shared / job / "progress.jsonl").read_text().startswith(first_seed)  # the first seed was kept, not redone
    assert not (tmp_path / "machine-b-home" / "jobs").exists()
    with pytest.raises(LeaseLost):
        queue.finish(lost, {})


def one_seed_at_a_time(monkeypatch, url: str) -> None:
    """Every role served at `url`, the synthesis roles one request at a time: a job's seeds run in turn."""
    point_roles_at(monkeypatch, url)
    for role in ("challenger", "strong", "weak", "judge"):
        monkeypatch.setenv(f"AUTODATA_ROLES__{role.upper()}__MAX_CONCURRENCY", "1")


WORKER = (
    "from autodata.service import run_worker; from autodata.settings import load_settings\n"
    "run_worker(load_settings(), name='draining', poll_s=0.2, beat_s=0.5, drain_s=2)"
)


def test_sigterm_drains_a_worker_and_hands_its_job_back(study_world, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTODATA_LLM_CACHE", "false")
    with ScriptedOpenAI(reply=ScriptedAgents(), latency_s=0.4) as slow:
        one_seed_at_a_time(monkeypatch, slow.url)
        settings = load_settings()
        queue = WorkQueue(settings.effective_optuna_storage)
        job = queue.submit("synthesize", {"recipe": "default"})
        worker = subprocess.Popen(
            [sys.executable, "-c", WORKER],
            cwd=Path(__file__).parent.parent,
            env=dict(os.environ),
            stderr=subprocess.PIPE,
            text=True,
        )
        progress = settings.effective_jobs_dir / job / "progress.jsonl"
        deadline = time.monotonic() + 120
        while not (progress.exists() and progress.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert worker.poll() is None, worker.stderr.read()
        worker.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _, stderr = worker.communicate(timeout=60)
        assert time.monotonic() - sent < 15 and worker.returncode == 0, stderr
        assert "SIGTERM: taking no new work" in stderr
        handed_back = queue.get(job)
        assert (handed_back.state, handed_back.owner, handed_back.attempts) == ("queued", None, 0), stderr
        kept = len(progress.read_text().splitlines())
        assert 1 <= kept < 3

        assert run_worker(load_settings(), name="next", once=True) == 1
    done = queue.get(job)
    assert done.state == "done" and done.result["progress"]["seeds_done"] == 3


def test_a_worker_whose_job_was_taken_over_stops_its_copy(study_world, tmp_path, monkeypatch):
    import threading

    monkeypatch.setenv("AUTODATA_LLM_CACHE", "false")
    with ScriptedOpenAI(reply=ScriptedAgents(), latency_s=0.3) as slow:
        one_seed_at_a_time(monkeypatch, slow.url)
        settings = load_settings()
        queue = WorkQueue(settings.effective_optuna_storage)
        job = queue.submit("synthesize", {"recipe": "default"})
        paused = threading.Thread(
            target=run_worker, args=(settings,), kwargs={"name": "paused", "once": True, "beat_s": 0.3}
        )
        paused.start()
        while len(slow.requests) < 3:  # it is working on the job
            time.sleep(0.05)
        make_stale(queue, job)  # as if "paused" had been cut off for an hour
        assert queue.claim("other").lease == 2
        sent = len(slow.requests)
        paused.join(timeout=30)
        assert not paused.is_alive()
        assert len(slow.requests) - sent <= 4  # it stopped within about a heartbeat, not at the end of the job
    row = queue.get(job)
    assert (row.state, row.owner, row.lease, row.attempts, row.error) == ("running", "other", 2, 0, None)


def test_a_worker_that_lost_its_lease_writes_nothing_more_to_the_job_folder(study_world, monkeypatch):
    import threading

    monkeypatch.setenv("AUTODATA_LLM_CACHE", "false")
    with ScriptedOpenAI(reply=ScriptedAgents(), latency_s=0.2) as slow:
        one_seed_at_a_time(monkeypatch, slow.url)
        settings = load_settings()
        queue = WorkQueue(settings.effective_optuna_storage)
        job = queue.submit("synthesize", {"recipe": "default"})
        progress = settings.effective_jobs_dir / job / "progress.jsonl"
        # Its heartbeat is too rare to notice the takeover: only the check before each write stops it.
        paused = threading.Thread(
            target=run_worker, args=(settings,), kwargs={"name": "paused", "once": True, "beat_s": 600}
        )
        paused.start()
        while not (progress.is_file() and progress.read_text().strip()):  # one seed written, the next in flight
            time.sleep(0.05)
        make_stale(queue, job)
        assert queue.claim("other").lease == 2
        written = progress.read_text()
        paused.join(timeout=60)
        assert not paused.is_alive()
        assert progress.read_text() == written  # the seed it finished after the takeover was not written
        assert not (settings.effective_jobs_dir / job / "manifest.json").exists()
    row = queue.get(job)
    assert (row.state, row.owner, row.lease, row.attempts, row.error) == ("running", "other", 2, 0, None)
