"""The promotion gate: promote only a gain that holds, paired, on the confirm split no choice has seen."""

import random

import optuna
import pytest
from mlflow import MlflowClient

from autodata.cli import main
from autodata.settings import load_settings
from autodata.workspace import Workspace
from autodata.world import World
from optimizers import tracking
from optimizers.promotion import PromotionRefused, compare
from optimizers.study import BASELINE_PARAMS, StudySettings, run_study
from tests.conftest import acceptance_scorer


def scored(values, ids=None):
    return {"question_ids": ids or [f"q{i}" for i in range(len(values))], "per_question": [values]}


@pytest.mark.parametrize(("shift", "passes"), [(0.3, True), (0.0, False), (-0.3, False)])
def test_the_gate_passes_a_clear_gain_only(shift, passes):
    rng = random.Random(4)
    production = [rng.uniform(-2, 0) for _ in range(80)]  # questions of very different difficulty
    candidate = [p + shift + (0.1 if i % 2 else -0.1) for i, p in enumerate(production)]  # noise of mean 0
    result = compare("likelihood", scored(candidate), scored(production), "default recipe")
    assert result.passed is passes
    assert result.gain.n == 80 and (result.gain.low > 0) is passes
    tags = result.tags()
    assert tags["autodata.gate.split"] == "confirm" and tags["autodata.gate.passed"] == str(passes).lower()
    assert float(tags["autodata.gate.gain_low"]) == result.gain.low and tags["autodata.gate.n"] == "80"


def test_scores_on_other_questions_are_not_compared():
    with pytest.raises(Exception, match="different confirm questions"):
        compare("likelihood", scored([1.0], ["a"]), scored([0.0], ["b"]), "default recipe")


def two_trials(name):
    """Trial 0 (the default recipe) and trial 1 (another recipe that also accepts items here)."""
    settings = load_settings()
    queued = optuna.create_study(study_name=name, storage=settings.effective_optuna_storage, direction="maximize")
    for changes in ({}, {"max_rounds": 2}):
        queued.enqueue_trial({**BASELINE_PARAMS, **changes})
    with Workspace(settings) as workspace:
        study = run_study(
            name,
            2,
            workspace=workspace,
            scorer=acceptance_scorer,
            study=StudySettings(seeds_per_trial=2, stages=(1.0,), rewrite_prompts=False),
        )
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    return study


def planted(candidate_hash, shift):
    """A confirm scorer with known numbers: the candidate's data scores `shift` above production's."""
    base = [-1.0, -0.5, -2.0, -1.5, -0.7, -1.2, -0.9, -1.1]

    def score(run_dir, out):
        delta = shift if run_dir.name == candidate_hash else 0.0
        return {"score": 0.0, "question_ids": [f"c{i}" for i in range(8)], "per_question": [[b + delta for b in base]]}

    return score


def test_promote_needs_a_confirmed_gain_and_records_the_evidence(study_world, capsys):
    from autodata import api

    study = two_trials("gate")
    candidate = study.trials[1].user_attrs["recipe_hash"]
    with pytest.raises(PromotionRefused, match=r"Not promoted: trial 1's gain is not above 0.*confirm split"):
        api.promote("gate", trial=1, scorer=planted(candidate, 0.0))  # a tie
    with pytest.raises(PromotionRefused, match="gain -0.100"):
        api.promote("gate", trial=1, scorer=planted(candidate, -0.1))  # worse
    assert tracking.production_recipe_version() is None  # nothing was registered

    message = api.promote("gate", trial=1, scorer=planted(candidate, 0.2))
    assert "Confirmed on the confirm split (8 questions" in message and tracking.production_recipe_version() == 1
    tags = MlflowClient().get_model_version(tracking.RECIPE_MODEL, "1").tags
    assert tags["autodata.gate.passed"] == "true" and tags["autodata.gate.forced"] == "false"
    assert tags["autodata.gate.production"] == "default recipe" and float(tags["autodata.gate.gain"]) == pytest.approx(
        0.2
    )

    # production is now trial 1's recipe, whose data is its trial's folder: trial 0 (the default) must beat it
    with pytest.raises(PromotionRefused, match=r"production \(models:/autodata-recipe/1\)"):
        api.promote("gate", trial=0, scorer=planted(study.trials[0].user_attrs["recipe_hash"], -0.3))
    # ... unless forced, which is recorded
    api.promote("gate", trial=0, force=True, scorer=planted(study.trials[0].user_attrs["recipe_hash"], -0.3))
    tags = MlflowClient().get_model_version(tracking.RECIPE_MODEL, "2").tags
    assert tags["autodata.gate.forced"] == "true" and tags["autodata.gate.passed"] == "not measured (--force)"

    # a dry run decides and registers nothing
    assert "would be promoted" in api.promote("gate", trial=1, dry_run=True, scorer=planted(candidate, 0.2))
    assert tracking.production_recipe_version() == 2


def test_the_cli_refuses_what_production_already_is_unless_forced(study_world, capsys):
    two_trials("same")
    assert main(["promote", "same", "--trial", "0"]) == 1  # trial 0 is the default recipe, production's now
    assert "is production's (default recipe) already" in capsys.readouterr().err
    assert main(["promote", "same", "--trial", "0", "--force"]) == 0
    tags = MlflowClient().get_model_version(tracking.RECIPE_MODEL, "1").tags
    assert tags["autodata.gate.forced"] == "true"


def test_only_promotion_reads_the_confirm_split(study_world, tiny_student, monkeypatch):
    """A study scored by the real proxy (tiny student) with prompt rewrites reads dev, never confirm;
    promotion reads confirm."""
    monkeypatch.setenv("AUTODATA_STUDENT", str(tiny_student))
    read: list[str] = []
    items = World.items
    monkeypatch.setattr(World, "items", lambda self, split: read.append(split) or items(self, split))
    settings = load_settings()
    queued = optuna.create_study(study_name="reads", storage=settings.effective_optuna_storage, direction="maximize")
    for changes in ({}, {"max_rounds": 2}):
        queued.enqueue_trial({**BASELINE_PARAMS, **changes})
    with Workspace(settings) as workspace:
        study = run_study(
            "reads",
            2,
            workspace=workspace,
            study=StudySettings(
                seeds_per_trial=2, stages=(0.5, 1.0), proxy_steps=2, dev_limit=5, rewrite_val_seeds=1, pruner="none"
            ),
        )
    assert "confirm" not in read and "dev" in read
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert study.trials[0].user_attrs["evidence"]["question_ids"] == ["d1"]  # the dev questions
    from autodata import api
    from autodata.errors import AutodataError

    try:
        api.promote("reads", trial=1)
    except AutodataError:
        pass  # refused or not: what matters here is what it read
    assert "confirm" in read


def test_an_mlflow_error_changes_no_production_state(study_world, monkeypatch):
    """Injected MLflow failures (a locked database, a server down) raise; they never read as "nothing there"."""
    from mlflow.exceptions import MlflowException

    from autodata import api
    from autodata.errors import AutodataError

    two_trials("faults")
    api.promote("faults", trial=1, force=True)
    api.promote("faults", trial=0, force=True)
    tracking.register_prompt_version("challenger", "validated rewrite", "from trial 1")
    prompts_before = tracking.latest_prompt_version("challenger")

    def down(*args, **kwargs):
        raise MlflowException("database is locked")  # error_code INTERNAL_ERROR

    monkeypatch.setattr(MlflowClient, "search_prompt_versions", down)
    with pytest.raises(AutodataError, match="could not list the challenger prompt's versions: database is locked"):
        tracking.ensure_seed_prompts()  # before: read as "no version", the seed text registered over the rewrite
    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", down)
    with pytest.raises(AutodataError, match="could not read the production recipe"):
        api.promote("faults", trial=1, force=True)  # before: recorded no previous version, so no rollback
    monkeypatch.undo()

    assert tracking.latest_prompt_version("challenger") == prompts_before
    assert tracking.production_recipe_version() == 2
    assert tracking.rollback() == (2, 1)  # the last promotion still knows what came before it
