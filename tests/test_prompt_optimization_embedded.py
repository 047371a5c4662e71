"""GEPA on the challenger with the embedded model on the demo world (slow: minutes)."""

import re

import pytest
from mlflow import MlflowClient

from tests.test_synthesis_embedded import autodata, finish

pytestmark = pytest.mark.slow
ARGS = ("prompts", "optimize", "challenger", "--budget", "6", "--train", "2", "--val", "2", "--holdout", "2")


def test_gepa_runs_on_the_embedded_model_and_resumes(tmp_path, monkeypatch):
    home = tmp_path / "home"
    assert finish(autodata(home, "world", "prepare"))[0] == 0
    code, first = finish(autodata(home, *ARGS))
    assert code == 0, first
    summary = re.search(r"(\d+) candidate\(s\), (\d+) metric calls; validation score ([\d.]+) \(version 1\)", first)
    assert summary and int(summary.group(2)) >= 6, first[-3000:]

    code, second = finish(autodata(home, *ARGS))
    assert code == 0, second
    if "Registered prompts:/autodata.challenger/2" in first:  # an improvement: the next run starts from it
        assert "(version 2)" in second
    else:  # same inputs: GEPA picks up its saved state instead of starting over
        assert "Loading gepa state from run dir" in second and summary.group(0) in second, second[-3000:]

    monkeypatch.setenv("AUTODATA_HOME", str(home))
    from autodata.settings import load_settings
    from optimizers import tracking

    experiment_id = tracking.setup(load_settings())
    runs = MlflowClient().search_runs([experiment_id], "tags.`autodata.kind` = 'prompt-optimization'")
    assert len(runs) == 2 and all("best_val_score" in r.data.metrics for r in runs)
