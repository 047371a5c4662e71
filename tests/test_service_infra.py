"""The service for a team, for real: PostgreSQL (Debian's server), `mlflow server` with served
artifacts, the service and two worker processes with their own homes (two machines), the
scripted endpoint on loopback. One worker is killed mid-trial; the other retries its trial.

Slow: about a minute and a half. `.ci/run` installs PostgreSQL with apt when it is missing.
"""

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from mlflow import MlflowClient

from autodata.search.server import free_port
from tests import infra
from tests.conftest import make_world
from tests.fakes.agents import ScriptedAgents
from tests.fakes.openai_server import ScriptedOpenAI

pytestmark = pytest.mark.slow

TOKEN = "team-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SIX_SEEDS = [
    ("t1", "who wrote the tragedy hamlet", "William Shakespeare"),
    ("t2", "who discovered penicillin", "Alexander Fleming"),
    ("t3", "who painted the mona lisa", "Leonardo da Vinci"),
    ("t4", "when did the rms titanic sink", "1912"),
    ("t5", "which planet is the largest in the solar system", "Jupiter"),
    ("t6", "who wrote the whaling novel moby-dick", "Herman Melville"),
]


def start(args, env, log):
    return subprocess.Popen(
        [sys.executable, "-m", "autodata.cli", *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process):
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def wait_until(check, what, timeout_s=180):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def test_postgres_mlflow_server_service_and_two_workers(tmp_path, corpus_file):
    world = make_world(tmp_path / "world", corpus_file, train=SIX_SEEDS)
    processes = []
    with infra.postgres("autodata", "mlflow") as pg, ScriptedOpenAI(reply=ScriptedAgents(), latency_s=0.25) as llm:
        with infra.mlflow_server(f"{pg}/mlflow", tmp_path / "artifacts") as tracking:
            base = {k: v for k, v in os.environ.items() if not k.startswith("AUTODATA_")} | {
                "AUTODATA_OPTUNA_STORAGE": f"{pg}/autodata",
                "AUTODATA_TRACKING_URI": tracking,
                "AUTODATA_WORLD": str(world),
                "LITELLM_LOCAL_MODEL_COST_MAP": "true",
            }
            for role in ("challenger", "strong", "weak", "judge", "student", "optimizer"):
                base |= {
                    f"AUTODATA_ROLES__{role.upper()}__BASE_URL": llm.url,
                    f"AUTODATA_ROLES__{role.upper()}__MODEL": "fake",
                }
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("service", "worker-a", "worker-b")}
            try:
                service_env = base | {"AUTODATA_HOME": str(tmp_path / "service-home"), "AUTODATA_SERVICE_TOKEN": TOKEN}
                processes.append(start(["service", "--port", str(port)], service_env, logs["service"]))
                infra.wait_for(f"{url}/health", "the service")
                study = {
                    "name": "team",
                    "trials": 2,
                    "scorer": "acceptance",
                    "seeds_per_trial": 3,
                    "stages": [1.0],
                    "rewrite_val_seeds": 0,
                    "heartbeat_interval": 1,
                    "grace_period": 3,
                }
                assert httpx.post(f"{url}/studies", json=study, headers=AUTH).status_code == 202

                # Worker A takes the study and starts trial 0; it is killed mid-trial.
                worker_a = start(
                    ["worker", "--name", "a", "--poll-s", "0.5"],
                    base | {"AUTODATA_HOME": str(tmp_path / "home-a")},
                    logs["worker-a"],
                )
                processes.append(worker_a)
                wait_until(
                    lambda: any(
                        t["state"] == "RUNNING" and t["mlflow_run_id"]
                        for t in httpx.get(f"{url}/studies/team", headers=AUTH).json()["trials"]  # synthesizing
                    ),
                    "a running trial",
                )
                os.killpg(worker_a.pid, signal.SIGKILL)
                worker_a.wait()
                time.sleep(4)  # past the grace period: the trial's heartbeat is stale
                worker_b = start(
                    ["worker", "--name", "b", "--poll-s", "0.5"],
                    base | {"AUTODATA_HOME": str(tmp_path / "home-b")},
                    logs["worker-b"],
                )
                processes.append(worker_b)
                shown = wait_until(
                    lambda: (s := httpx.get(f"{url}/studies/team", headers=AUTH).json())["state"] == "done" and s,
                    "the study to finish",
                )
                states = [t["state"] for t in shown["trials"]]
                assert states.count("COMPLETE") == 2 and states[0] == "FAIL", states  # trial 0 died with worker A
                assert (
                    shown["trials"][2]["solver_attempts"] == shown["trials"][0]["solver_attempts"]
                )  # retried with its parameters

                client = MlflowClient(tracking)
                experiment = client.get_experiment_by_name("autodata")
                assert experiment.artifact_location.startswith("mlflow-artifacts:")
                parents = client.search_runs([experiment.experiment_id], "tags.`autodata.kind` = 'study'")
                assert len(parents) == 1
                children = client.search_runs(
                    [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'"
                )
                finished = [c for c in children if c.info.status == "FINISHED"]
                assert len(finished) == 2
                for child in finished:  # artifacts come back through the server
                    recipe = client.download_artifacts(child.info.run_id, "recipe/recipe.yaml", str(tmp_path))
                    assert "acceptance:" in open(recipe).read()

                promoted = httpx.post(
                    f"{url}/studies/team/promote", json={"force": True}, headers=AUTH, timeout=300
                ).json()
                assert promoted["production_version"] == 1
                assert client.get_model_version_by_alias("autodata-recipe", "production").version in (1, "1")
                job = httpx.post(f"{url}/jobs/synthesize", json={"recipe": "production", "limit": 2}, headers=AUTH)
                done = wait_until(
                    lambda: (
                        (j := httpx.get(f"{url}{job.json()['url']}", headers=AUTH).json())["state"]
                        in ("done", "failed")
                        and j
                    ),
                    "the synthesis job",
                )
                assert done["state"] == "done" and done["worker"] == "b", done
                assert done["manifest"]["recipe_source"] == "models:/autodata-recipe/1"
                assert done["progress"]["seeds_done"] == 2
            finally:
                for process in processes:
                    stop(process)
                for log in logs.values():
                    log.close()
