"""A real `mlflow server` on loopback: artifacts travel through it, so promotion on one machine
and production synthesis on another work (two homes stand for the two machines).

Slow: starts the MLflow server (about 10 s here).
"""

import json
import shutil

import pytest
from mlflow import MlflowClient

from autodata.cli import main
from autodata.settings import load_settings
from autodata.workspace import Workspace
from optimizers.study import StudySettings, run_study
from tests import infra
from tests.conftest import acceptance_scorer

pytestmark = pytest.mark.slow


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` with a SQLite backend and served artifacts in their own folder."""
    store = tmp_path / "mlflow-server"
    store.mkdir()
    with infra.mlflow_server(f"sqlite:///{store / 'mlflow.db'}", store / "artifacts") as url:
        yield url, store / "artifacts"


def test_promote_on_one_machine_synthesize_production_on_another(
    study_world, tmp_path, monkeypatch, mlflow_server, capsys
):
    url, served = mlflow_server
    monkeypatch.setenv("AUTODATA_TRACKING_URI", url)
    # Machine A: a one-trial study (scored by acceptance; the proxy's LoRA is not what is tested) and a promotion.
    with Workspace(load_settings()) as workspace:
        run_study(
            "shared",
            1,
            workspace=workspace,
            scorer=acceptance_scorer,
            study=StudySettings(seeds_per_trial=2, stages=(1.0,), rewrite_prompts=False),
        )
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("autodata")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    capsys.readouterr()
    assert main(["promote", "shared", "--force"]) == 0  # trial 0 is the default recipe: the gate would refuse
    assert "autodata-recipe version 1" in capsys.readouterr().out
    assert list(served.rglob("recipe.yaml"))  # stored by the server, not in machine A's home
    assert not (study_world / "mlartifacts").exists()
    shutil.rmtree(study_world)  # machine A is gone

    # Machine B: another home, the same tracking server.
    monkeypatch.setenv("AUTODATA_HOME", str(tmp_path / "home-b"))
    out = tmp_path / "prod"
    assert main(["synthesize", "--recipe", "production", "--out", str(out), "--limit", "2"]) in (0, 1)
    assert json.loads((out / "manifest.json").read_text())["recipe_source"] == "models:/autodata-recipe/1"
    assert main(["recipe", "show", "production"]) == 0
    assert "acceptance:" in capsys.readouterr().out
