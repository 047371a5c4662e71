"""Studies, MLflow logging, prompt versions and promotion, against the scripted endpoint."""

import json
import re
from dataclasses import replace

import optuna
import pytest
from mlflow import MlflowClient

from autodata.cli import main
from autodata.errors import AutodataError
from autodata.recipe import Recipe
from autodata.settings import load_settings
from autodata.workspace import Workspace
from optimizers import tracking
from optimizers.study import BASELINE_PARAMS, StudySettings, run_study, settings_for, suggest_recipe
from prompts import load_prompt
from tests.conftest import acceptance_scorer


def run_in_world(name, trials, **options):
    """`run_study` in a workspace on the configured world (AUTODATA_WORLD, set by the fixtures)."""
    with Workspace(load_settings()) as workspace:
        return run_study(name, trials, workspace=workspace, **options)


def test_study_trials_runs_prompts_and_promotion(study_world, scripted_roles, capsys):
    # The scripted challenger leaks the answer unless its instructions forbid it, as the rewrite does:
    # the rewrite beats the seed prompt on the validation seeds and becomes selectable.
    scripted_roles.challenger_rule = scripted_roles.rewrite_adds.strip()
    settings = load_settings()
    study = run_in_world("demo", 2, scorer=acceptance_scorer, study=StudySettings(stages=(1.0,)))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert (
        study.trials[0].params["challenger_prompt"] == "seed" and study.trials[0].params["max_rounds"] == 3
    )  # baseline
    assert study.trials[0].user_attrs["recipe_hash"] == Recipe().content_hash  # trial 0 is the shipped default

    tracking.setup(settings)
    client = MlflowClient()
    experiment = client.get_experiment_by_name("autodata")
    parent = client.search_runs([experiment.experiment_id], "tags.`autodata.kind` = 'study'")[0]
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 2
    assert {"trials.json", "report.html"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    page = (settings.home_dir / "studies" / "demo" / "report.html").read_text()
    assert 'data-trial="0"' in page and 'data-trial="1"' in page
    assert main(["report", "--study", "demo", "--out", str(settings.home_dir / "again.html")]) == 0
    assert (settings.home_dir / "again.html").is_file()
    assert main(["report"]) == 1 and "Name a run folder" in capsys.readouterr().err
    for child in children:
        assert {"acceptance_rate", "score", "llm_calls_per_accepted_item"} <= set(child.data.metrics)
        assert child.data.params["prompt.challenger"].startswith("prompts:/autodata.challenger/")
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"recipe", "manifest.json", "sample_trajectories.jsonl", "report.html"} <= artifacts
    assert tracking.latest_prompt_version("challenger") >= 2  # a rewrite beat the seed prompt on validation
    winner = MlflowClient().get_prompt_version("autodata.challenger", 2)
    assert (
        winner.tags["autodata.status"] == "accepted"
        and "version 1 0.00 -> this 1.00: accepted" in winner.commit_message
    )

    run_in_world(
        "demo", 3, scorer=acceptance_scorer, study=StudySettings(stages=(1.0,))
    )  # resumes, adds the difference
    assert len(optuna.load_study(study_name="demo", storage=settings.effective_optuna_storage).trials) == 3
    run_in_world("demo", 3, scorer=acceptance_scorer, study=StudySettings(stages=(1.0,)))  # there: nothing to do
    assert len(optuna.load_study(study_name="demo", storage=settings.effective_optuna_storage).trials) == 3

    assert main(["study", "show", "demo"]) == 0
    shown = capsys.readouterr().out
    assert "highest score: trial" in shown and shown.count("COMPLETE") == 3

    assert main(["promote", "demo", "--trial", "0"]) == 1  # the default recipe: nothing to gain over it
    assert "already" in capsys.readouterr().err
    assert main(["promote", "demo", "--trial", "0", "--force"]) == 0
    assert "as autodata-recipe version 1" in capsys.readouterr().out
    assert tracking.production_recipe_version() == 1
    assert MlflowClient().get_prompt_version_by_alias("autodata.challenger", "production").version in (1, "1")

    out = study_world.parent / "prod"
    assert main(["synthesize", "--recipe", "production", "--out", str(out), "--limit", "2"]) in (0, 1)
    assert json.loads((out / "manifest.json").read_text())["recipe_source"] == "models:/autodata-recipe/1"

    assert main(["promote", "demo", "--trial", "1", "--force"]) == 0  # the gate itself: tests/test_promotion.py
    assert tracking.production_recipe_version() == 2
    assert main(["promote", "demo", "--rollback"]) == 0
    assert "from version 2 to version 1" in capsys.readouterr().out
    assert tracking.production_recipe_version() == 1


def test_promote_and_show_errors_are_one_line(study_world, capsys):
    assert main(["study", "show", "nope"]) == 1
    assert "No study named 'nope'" in capsys.readouterr().err
    assert main(["promote", "x", "--rollback"]) == 1
    assert "Nothing to roll back" in capsys.readouterr().err
    assert main(["synthesize", "--recipe", "production", "--out", "/tmp/never", "--limit", "1"]) == 1
    assert "Promote a study trial" in capsys.readouterr().err


def test_interim_scores_let_the_pruner_stop_a_trailing_trial(study_world, capsys):
    order: list = []

    def scorer(run_dir, out):  # the first two recipes score well, later ones badly, at every data size
        order.append(run_dir) if run_dir not in order else None
        return {"score": [1.0, 0.8][order.index(run_dir)] if order.index(run_dir) < 2 else 0.0}

    settings = load_settings()
    queued = optuna.create_study(study_name="pruned", storage=settings.effective_optuna_storage, direction="maximize")
    for changes in ({}, {"max_rounds": 2}, {"top_k": 5}):  # three recipes that all accept items here
        queued.enqueue_trial({**BASELINE_PARAMS, **changes})
    study = run_in_world("pruned", 3, scorer=scorer, study=StudySettings(seeds_per_trial=2))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert study.trials[2].intermediate_values == {1: 0.0}  # reported after 1 of 2 seeds
    run = MlflowClient().get_run(study.trials[2].user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["autodata.pruned_at_seeds"] == "1"
    assert main(["study", "show", "pruned"]) == 0
    assert "PRUNED" in capsys.readouterr().out


def test_two_objectives_score_and_calls_per_item(study_world, capsys):
    options = StudySettings(seeds_per_trial=2, objectives="score,calls")
    study = run_in_world("pareto", 2, scorer=acceptance_scorer, study=options)
    assert len(study.directions) == 2 and all(len(t.values) == 2 for t in study.trials)
    assert study.trials[0].values[1] == study.trials[0].user_attrs["llm_calls_per_accepted_item"] > 0
    assert main(["study", "show", "pareto"]) == 0
    shown = capsys.readouterr().out
    assert "highest score: trial" in shown and "pareto" in shown
    with pytest.raises(Exception, match="made to maximize score, minimize calls"):
        run_in_world("pareto", 1, scorer=acceptance_scorer, study=StudySettings(seeds_per_trial=2))


def test_a_trial_whose_process_died_is_retried_with_its_parameters(study_world):
    """Heartbeats: a RUNNING trial that stopped beating is failed and enqueued again by the next process."""
    import time

    settings = load_settings()
    options = StudySettings(seeds_per_trial=1, stages=(1.0,), heartbeat_interval=1, grace_period=2)
    storage = settings.effective_optuna_storage
    run_in_world("hb", 1, scorer=acceptance_scorer, study=options)
    study = optuna.load_study(study_name="hb", storage=storage)
    dead = study.ask()  # what a process killed mid-trial leaves behind: RUNNING, params chosen, no heartbeat
    suggest_recipe(dead, {role: 1 for role in tracking.OPTIMIZABLE_PROMPTS})
    study._storage.record_heartbeat(dead._trial_id)
    time.sleep(3)
    study = run_in_world("hb", 2, scorer=acceptance_scorer, study=options)
    states = {t.number: t for t in study.trials}
    assert states[dead.number].state.name == "FAIL"
    retried = [
        t
        for t in study.trials
        if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == dead.number
    ]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"
    assert retried[0].params == states[dead.number].params


def test_parallel_trials_each_get_their_child_run(study_world):
    settings = load_settings()
    study = run_in_world(
        "parallel",
        2,
        scorer=acceptance_scorer,
        study=StudySettings(seeds_per_trial=2, stages=(1.0,), jobs=2, rewrite_prompts=False),
    )
    # No "Run ... is already active"; a third trial may have started before the study stopped at two.
    assert len(study.trials) >= 2 and all(t.state.name == "COMPLETE" for t in study.trials)
    experiment_id = tracking.setup(settings)
    parent = MlflowClient().search_runs(
        [experiment_id], "tags.`autodata.study` = 'parallel' and tags.`autodata.kind` = 'study'"
    )
    children = MlflowClient().search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent[0].info.run_id}'")
    assert sorted(c.info.run_id for c in children) == sorted(t.user_attrs["mlflow_run_id"] for t in study.trials)
    assert all(c.info.status == "FINISHED" for c in children)


def test_a_resumed_study_keeps_how_it_scores(study_world):
    settings = load_settings()
    storage = settings.effective_optuna_storage
    options = StudySettings(seeds_per_trial=2, score_metric="format_valid", stages=(1.0,))
    run_in_world("kept", 1, scorer=acceptance_scorer, study=options)
    stored = settings_for("kept", storage, {})
    assert replace(stored, world="") == options and stored.world  # `study run kept --trials 5` scores like the first
    assert settings_for("kept", storage, {"stages": (0.5, 1.0)}).score_metric == "format_valid"
    with pytest.raises(AutodataError, match="score_metric='format_valid'; with 'em' its scores would not compare"):
        settings_for("kept", storage, {"score_metric": "em"})
    assert settings_for("new", storage, {"seeds_per_trial": 4}) == StudySettings(seeds_per_trial=4)


def test_a_rewrite_that_does_not_beat_its_parent_is_never_selected(study_world, scripted_roles):
    """Here the challenger ignores its instructions: the rewrite scores what its parent scores."""
    run_in_world("flat", 1, scorer=acceptance_scorer, study=StudySettings(stages=(1.0,), seeds_per_trial=2))
    found = MlflowClient().search_prompt_versions("autodata.challenger")
    versions = {int(v.version): v for v in getattr(found, "prompt_versions", found)}
    assert sorted(versions) == [1, 2] and tracking.latest_prompt_version("challenger") == 1
    assert versions[2].tags["autodata.status"] == "rejected"
    assert "version 1 " in versions[2].commit_message and "rejected, not better" in versions[2].commit_message
    assert versions[2].tags["autodata.val_score"] == versions[2].tags["autodata.parent_val_score"]


def test_every_searched_parameter_changes_the_recipe(study_world):
    settings = load_settings()
    tracking.setup(settings)
    tracking.ensure_seed_prompts()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(24):
        trial = study.ask()
        recipe, _ = suggest_recipe(trial, {role: 1 for role in tracking.OPTIMIZABLE_PROMPTS})
        assert "tagger_prompt" not in trial.params
        assert ("verifier_prompt" in trial.params) == recipe.llm_judge  # read only by the LLM judge
        assert (recipe.hint_mode, recipe.weak_mode) == (trial.params["hint_mode"], trial.params["weak_mode"])
        seen |= {(k, str(v)) for k, v in trial.params.items() if k in ("hint_mode", "weak_mode", "llm_judge")}
        study.tell(trial, 0.0)
    assert {v for k, v in seen if k == "hint_mode"} == {"answer", "titles", "none"}
    assert {v for k, v in seen if k == "llm_judge"} == {"True", "False"}


def test_baseline_params_are_the_default_recipe():
    r = Recipe()
    assert BASELINE_PARAMS == {
        "attempts_per_solver": r.acceptance.attempts_per_solver,
        "strong_min_accuracy": r.acceptance.strong_min_accuracy,
        "weak_max_accuracy": r.acceptance.weak_max_accuracy,
        "min_gap": r.acceptance.min_gap,
        "max_rounds": r.max_rounds,
        **r.strategies.weights(),
        "top_k": r.search.top_k,
        "max_turns": r.search.max_turns,
        "hint_mode": r.hint_mode,
        "weak_mode": r.weak_mode,
        "llm_judge": r.llm_judge,
        "challenger_prompt": "seed",
    }


def test_trial_0_is_exactly_the_shipped_default_recipe(study_world):
    """BASELINE_PARAMS, enqueued as a study's trial 0, give Recipe() itself: the hash `autodata synthesize` uses."""
    tracking.setup(load_settings())
    assert tracking.ensure_seed_prompts() == {role: 1 for role in tracking.OPTIMIZABLE_PROMPTS}  # a fresh registry
    for role in tracking.OPTIMIZABLE_PROMPTS:
        assert tracking.load_prompt_version(role, 1) == load_prompt(role)  # the shipped texts, unchanged by MLflow
    study = optuna.create_study()
    study.enqueue_trial(BASELINE_PARAMS)
    trial = study.ask()
    latest = {role: tracking.latest_prompt_version(role) or 1 for role in tracking.OPTIMIZABLE_PROMPTS}  # as run_study
    recipe, versions = suggest_recipe(trial, latest)
    assert trial.params == BASELINE_PARAMS  # every searched parameter has a baseline value, and nothing else
    assert versions == {"challenger": 1, "tagger": 1, "verifier": 1}
    assert recipe == Recipe() and recipe.content_hash == Recipe().content_hash


def test_a_dead_optimizer_endpoint_costs_the_rewrite_not_the_trial(study_world, monkeypatch):
    monkeypatch.setenv("AUTODATA_ROLES__OPTIMIZER__BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens there
    monkeypatch.setenv("AUTODATA_ROLES__OPTIMIZER__MAX_RETRIES", "0")
    study = run_in_world(
        "dead-optimizer", 1, scorer=acceptance_scorer, study=StudySettings(stages=(1.0,), seeds_per_trial=2)
    )
    [trial] = study.trials
    assert trial.state.name == "COMPLETE" and trial.value is not None
    assert "optimizer" in trial.user_attrs["prompt_rewrite_error"]
    run = MlflowClient().get_run(trial.user_attrs["mlflow_run_id"])
    assert run.data.tags["autodata.prompt_rewrite_error"] == trial.user_attrs["prompt_rewrite_error"]
    assert tracking.latest_prompt_version("challenger") == 1  # nothing registered


def test_a_study_says_how_far_it_is_and_shows_synthesis(study_world, capsys):
    from autodata import api

    before = optuna.logging.get_verbosity()
    api.run_study(
        "shown", 2, progress=True, scorer="acceptance", seeds_per_trial=2, stages=(1.0,), rewrite_prompts=False
    )
    said = capsys.readouterr().err
    assert "trial 0 (0 of 2 finished): synthesis from 2 seeds" in said
    assert re.search(r"trial 1 \(1 of 2 finished; about \d+ min left\): synthesis", said), said
    assert "synthesizing" in said and "accepted=" in said  # each trial's synthesis bar
    assert optuna.logging.get_verbosity() == before  # Optuna's own INFO lines were off only for the study
