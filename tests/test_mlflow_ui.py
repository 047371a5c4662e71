"""`autodata mlflow ui` shows a study's runs and the prompt versions, rendered by headless Chromium.

Slow: starts the MLflow server and a browser. Needs Debian's `chromium` (`.ci/run` installs it).
"""

import html
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from autodata.search.server import free_port
from autodata.settings import load_settings
from autodata.workspace import Workspace
from optimizers import tracking
from optimizers.study import StudySettings, run_study
from tests.conftest import acceptance_scorer
from tests.infra import CHROMIUM_FLAGS, wait_for

pytestmark = pytest.mark.slow


def page_text(url: str, profile) -> str:
    """The page's visible text after its JavaScript ran (the MLflow UI is a single-page app)."""
    chromium = shutil.which("chromium") or pytest.fail("Debian's chromium is not installed: apt-get install chromium")
    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=30000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    ).stdout
    dom = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.DOTALL)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


@pytest.fixture
def mlflow_ui(study_world, tmp_path):
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "autodata.cli", "mlflow", "ui", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/health", "the MLflow UI")
        yield base
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)


def test_study_runs_and_prompt_versions_show_in_the_ui(study_world, scripted_roles, mlflow_ui, tmp_path):
    scripted_roles.challenger_rule = scripted_roles.rewrite_adds.strip()  # the rewrites help: they become versions
    settings = load_settings()
    with Workspace(settings) as workspace:
        run_study(
            "uitest",
            3,
            workspace=workspace,
            scorer=acceptance_scorer,
            study=StudySettings(seeds_per_trial=2, stages=(1.0,)),
        )
    experiment_id = tracking.setup(settings)
    parent = MlflowClient().search_runs([experiment_id], "tags.`autodata.kind` = 'study'")[0].info.run_id
    profile = tmp_path / "chromium"

    runs = page_text(f"{mlflow_ui}/#/experiments/{experiment_id}/runs", profile)
    assert "study uitest" in runs and "4 matching runs" in runs  # the parent and its three trials

    parent_page = page_text(f"{mlflow_ui}/#/experiments/{experiment_id}/runs/{parent}", profile)
    assert all(f"uitest trial {n}" in parent_page for n in range(3)), parent_page[:2000]

    prompt = page_text(f"{mlflow_ui}/#/prompts/autodata.challenger", profile)
    latest = tracking.latest_prompt_version("challenger")
    assert latest >= 2 and all(f"Version {v}" in prompt for v in range(1, latest + 1)), prompt[:2000]
    assert "from trial" in prompt  # the latest version's commit message says where it came from
