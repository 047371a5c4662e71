"""The typed records at the boundaries: proxy.json (`ProxyResult`), scorer results (`ScoreResult`), a study's
trial rows (`TrialRow`) and the service's bodies, and the JSONL readers that feed them.

`tests/fixtures/records/` holds files as the code before these records wrote them: `proxy_likelihood.json`
from a real run of the proxy on the tiny student, `proxy_em.json` from its result builder on generation
numbers, `trials_before.json` the MLflow `trials.json` of a two-objective study.
"""

import json
from pathlib import Path

import optuna
import pytest

from evals.intervals import Interval, mean_interval
from evals.records import ProxyResult, ScoreResult
from optimizers.promotion import compare
from optimizers.study import BASELINE_PARAMS, TrialRow, trial_rows

FIXTURES = Path(__file__).parent / "fixtures" / "records"


# --- proxy.json ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["proxy_likelihood.json", "proxy_em.json"])
def test_a_proxy_json_written_before_the_records_reads_and_writes_back_the_same(name, tmp_path):
    text = (FIXTURES / name).read_text()
    result = ProxyResult.read(FIXTURES / name)
    assert result.record() == json.loads(text)
    result.write(tmp_path / "proxy.json")
    assert (tmp_path / "proxy.json").read_text() == text  # the same keys, values and order: nothing lost


def test_a_proxy_result_is_typed_and_still_reads_as_the_dict_of_its_file():
    likelihood = ProxyResult.read(FIXTURES / "proxy_likelihood.json")
    assert isinstance(likelihood.score_interval, Interval) and likelihood.score_interval.repeats == 2
    assert likelihood.score == likelihood.score_interval.mean and likelihood.dev_em is None
    assert len(likelihood.per_question) == likelihood.repeats and likelihood.question_ids[0] == "d0"
    # as the CLI and bench/ read it: keys of proxy.json, generation metrics only when generated
    assert "dev_em" not in likelihood and likelihood["dev_n"] == 6 and likelihood["score_interval"]["repeats"] == 2
    assert set(likelihood) == set(json.loads((FIXTURES / "proxy_likelihood.json").read_text()))
    assert dict(likelihood) == likelihood.record() and likelihood.get("dev_em") is None
    generated = ProxyResult.read(FIXTURES / "proxy_em.json")
    assert generated.score_metric == "em" and "dev_em" in generated and generated["base_format_valid"] < 1


def test_unknown_keys_are_kept():
    data = json.loads((FIXTURES / "proxy_likelihood.json").read_text()) | {"eval_generated_tokens_per_s": 12.5}
    assert ProxyResult.model_validate(data).record()["eval_generated_tokens_per_s"] == 12.5


# --- scorer results ------------------------------------------------------------------------------


def test_a_scorer_dict_reads_as_a_score_result_with_its_own_numbers():
    result = ScoreResult.model_validate({"score": 2, "accepted": 5, "note": "x", "flag": True})
    assert result.score == 2.0 and result.score_interval is None and result.evidence["per_question"] is None
    assert result.numbers() == {"score": 2.0, "accepted": 5.0, "flag": 1.0}  # what MLflow logs
    assert result.record() == {"score": 2.0, "accepted": 5, "note": "x", "flag": True}


def test_the_gate_compares_score_results_and_dicts_alike():
    per_question = [[0.5, 0.75, 1.0, 0.25]]
    interval = mean_interval(per_question).as_interval()
    typed = ScoreResult(
        score=interval.mean, score_interval=interval, question_ids=list("abcd"), per_question=per_question
    )
    lower = {"question_ids": list("abcd"), "per_question": [[v - 0.5 for v in per_question[0]]]}
    gate = compare("likelihood", typed, lower, "default recipe")
    assert gate.passed and gate.gain.mean == pytest.approx(0.5) and gate.candidate == mean_interval(per_question)
    with pytest.raises(Exception, match="question_ids and per_question"):
        compare("likelihood", ScoreResult(score=1.0), lower, "default recipe")


# --- study rows ----------------------------------------------------------------------------------


def a_study(directions, storage=None, name=None):
    """Trial 0 (the default recipe), a better trial, and a failed one, as `run_study` records them."""
    study = optuna.create_study(directions=directions, storage=storage, study_name=name)
    fixed = {k: optuna.distributions.CategoricalDistribution([v]) for k, v in BASELINE_PARAMS.items()}
    for number, shift in enumerate((0.0, 0.3, None)):
        trial = study.ask(fixed)
        trial.set_user_attr("recipe_hash", f"h{number}")
        trial.set_user_attr("prompt_versions", {"challenger": 1, "tagger": 1, "verifier": 1})
        trial.set_user_attr("mlflow_run_id", f"run{number}")
        if shift is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        for key, value in (("acceptance_rate", 0.5), ("accepted_items", 3), ("accepted_per_seed", 1.5)):
            trial.set_user_attr(key, value)
        trial.set_user_attr("llm_calls_per_accepted_item", 10.0 - number)
        trial.set_user_attr("evidence", {"question_ids": ["a", "b", "c"], "per_question": [[shift, 0.1 + shift, 0.2]]})
        study.tell(trial, [1.0 + number, 10.0 - number] if len(directions) > 1 else 1.0 + number)
    return study


def test_trial_rows_are_typed_and_name_what_attempts_count():
    rows, best = trial_rows(a_study(["maximize"]))
    assert all(isinstance(row, TrialRow) for row in rows) and best is rows[1]
    assert rows[0].solver_attempts == BASELINE_PARAMS["attempts_per_solver"] and rows[0].rounds == 3
    assert rows[1].delta_vs_default.mean == pytest.approx(0.2) and rows[0].score_interval.n == 3
    assert rows[2].state == "FAIL" and rows[2].score is None and rows[2].score_interval is None
    dumped = rows[0].model_dump(mode="json")
    assert "solver_attempts" in dumped and "attempts" not in dumped


def test_trials_json_rows_written_before_the_rename_read_as_trial_rows():
    """MLflow's trials.json called the field "attempts"; its rows read, and match today's."""
    before = json.loads((FIXTURES / "trials_before.json").read_text())
    rows, best = trial_rows(a_study(["maximize", "minimize"]))
    old = [TrialRow.model_validate(row) for row in before["trials"]]
    assert [row.solver_attempts for row in old] == [row["attempts"] for row in before["trials"]]
    assert [row.pareto for row in old] == [row.pareto for row in rows] and TrialRow.model_validate(
        before["best"]
    ).trial == best.trial
    for row in before["trials"]:
        row["solver_attempts"] = row.pop("attempts")
    assert [row.model_dump(mode="json") for row in old] == before["trials"]


def test_study_show_prints_the_typed_rows(tmp_path, capsys, monkeypatch):
    from autodata.cli import main

    monkeypatch.setenv("AUTODATA_HOME", str(tmp_path))
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    a_study(["maximize"], storage=storage, name="typed")
    assert main(["study", "show", "typed", "--storage", storage]) == 0
    lines = capsys.readouterr().out.splitlines()
    trial0, trial1, failed = (line.split() for line in lines[1:4])
    assert trial0[:3] == ["0", "COMPLETE", "0.100"] and trial1[:3] == ["1", "COMPLETE", "0.300"]  # interval means
    assert str(BASELINE_PARAMS["attempts_per_solver"]) in trial0 and "h1" in trial1
    assert failed[:3] == ["2", "FAIL", "-"]
    assert lines[4].startswith("highest score: trial 1 (2.000, recipe h1)")


# --- the service's bodies ------------------------------------------------------------------------


def test_openapi_names_the_service_bodies():
    from fastapi.testclient import TestClient

    from autodata.service import create_app
    from autodata.settings import load_settings

    with TestClient(create_app(load_settings())) as client:
        schema = client.get("/openapi.json").json()
    named = set(schema["components"]["schemas"])
    assert {
        "StudyRequest",
        "PromoteRequest",
        "SynthesizeRequest",
        "Health",
        "StudyLaunched",
        "StudySummary",
        "StudyDetail",
        "TrialRow",
        "Interval",
        "ProductionChange",
        "JobLaunched",
        "JobView",
        "JobProgress",
        "PromptVersions",
        "PromptVersion",
        "ErrorBody",
        "InvalidRequest",
    } <= named

    def body(path, method, status):
        return schema["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]

    assert body("/studies/{name}", "get", "200") == {"$ref": "#/components/schemas/StudyDetail"}
    assert body("/studies", "get", "200")["items"] == {"$ref": "#/components/schemas/StudySummary"}
    assert body("/studies", "post", "202") == {"$ref": "#/components/schemas/StudyLaunched"}
    assert body("/studies", "post", "422") == {"$ref": "#/components/schemas/InvalidRequest"}  # our shape
    assert body("/studies/{name}/promote", "post", "200") == {"$ref": "#/components/schemas/ProductionChange"}
    assert body("/studies/{name}/promote", "post", "409") == {"$ref": "#/components/schemas/ErrorBody"}
    assert body("/jobs/{work_id}", "get", "200") == {"$ref": "#/components/schemas/JobView"}
    assert body("/prompts/{role}", "get", "200") == {"$ref": "#/components/schemas/PromptVersions"}
    assert "solver_attempts" in schema["components"]["schemas"]["TrialRow"]["properties"]
    assert "HTTPValidationError" not in named  # FastAPI's 422 shape is not what the service answers


# --- JSONL readers -------------------------------------------------------------------------------


def test_an_evaluation_resumes_past_a_torn_last_line(tmp_path, monkeypatch, bm25_index):
    from autodata.seeds import SeedItem
    from tests.fakes.openai_server import ScriptedOpenAI
    from tests.test_evaluate import ITEMS, run, student

    hidden = [SeedItem(id=i.id, question=i.question) for i in ITEMS]
    with ScriptedOpenAI(reply=student) as fake:
        run(fake, monkeypatch, tmp_path / "out", bm25_index, items=hidden[:2])
        log = tmp_path / "out" / "trajectories.jsonl"
        log.write_text(log.read_text()[:-20])  # a crash in the middle of q2's line
        sent = len(fake.requests)
        run(fake, monkeypatch, tmp_path / "out", bm25_index, items=hidden[:2])
        assert len(fake.requests) == sent + 2  # q2 ran again (a search, an answer); q1 was read back
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [p["id"] for p in predictions] == ["q1", "q2"]


def test_a_job_shows_its_manifest_and_usage_once_done(tmp_path):
    from fastapi.testclient import TestClient

    from autodata.service import create_app
    from autodata.settings import load_settings
    from autodata.workqueue import WorkQueue

    settings = load_settings()
    with TestClient(create_app(settings)) as client:
        url = client.post("/jobs/synthesize", json={"limit": 2}).json()["url"]
        queued = client.get(url).json()
        assert queued["progress"] == {"seeds_done": 0, "accepted": 0, "rejected": 0, "llm_calls": 0}
        assert queued["worker"] is None and queued["error"] is None and "manifest" not in queued
        queue = WorkQueue(settings.effective_optuna_storage)
        work = queue.claim("w")
        queue.finish(work, {"manifest": {"recipe_source": "default"}, "usage": {}})
        done = client.get(url).json()
        assert done["manifest"] == {"recipe_source": "default"} and done["usage"] == {} and done["worker"] == "w"
