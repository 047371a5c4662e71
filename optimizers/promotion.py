"""The promotion gate: a study's choice goes to production only when its gain holds on questions no
choice has seen.

`promotion_gate` is the whole decision for one study trial (`autodata promote` registers what it
passes). A study picks its best trial on the dev split, so dev cannot confirm it. `confirm_gate` scores
the candidate's data and production's (the default recipe's when nothing is in production) with
the same proxy on the world's `confirm` split, which no study, GEPA run or rewrite validation
reads, and passes only when the paired 95% interval of the gain lies above 0. Production's data
is the synthesis of its recipe on the study's seed budget, in the study's runs folder (trial 0's
folder when production is the default recipe), so it is made once and resumed like a trial's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from autodata.errors import AutodataError
from autodata.recipe import Recipe, load_recipe
from autodata.settings import Settings
from autodata.workspace import Workspace
from evals.intervals import Estimate, mean_interval, paired_difference
from evals.recipe_score import Scorer, proxy_scorer, score_recipe
from evals.records import Evidence, ScoreResult

if TYPE_CHECKING:
    from optimizers.study import StudySettings, TrialRow

CONFIRM = "confirm"


class PromotionRefused(AutodataError):
    """The candidate's gain on the confirm split is not above 0 at 95%."""


@dataclass(frozen=True)
class GateResult:
    metric: str
    candidate: Estimate
    production: Estimate
    gain: Estimate  # candidate - production, paired over the confirm questions
    production_source: str  # "default recipe" or "models:/autodata-recipe/N"

    @property
    def passed(self) -> bool:
        return self.gain.above_zero

    def describe(self) -> str:
        return (
            f"on the {CONFIRM} split ({self.gain.n} questions, {self.metric}, {self.gain.repeats} repeat(s)): "
            f"candidate {self.candidate}, production ({self.production_source}) {self.production}, "
            f"gain {self.gain.mean:+.3f} [{self.gain.low:+.3f}, {self.gain.high:+.3f}] (95% paired bootstrap)"
        )

    def tags(self) -> dict[str, str]:
        """What the registered version records, so MLflow shows why it is in production (a forced
        promotion measures nothing and records only that it was forced)."""
        return {
            "autodata.gate.split": CONFIRM,
            "autodata.gate.metric": self.metric,
            "autodata.gate.n": str(self.gain.n),
            "autodata.gate.repeats": str(self.gain.repeats),
            "autodata.gate.candidate_score": f"{self.candidate.mean:.6f}",
            "autodata.gate.production_score": f"{self.production.mean:.6f}",
            "autodata.gate.production": self.production_source,
            "autodata.gate.gain": f"{self.gain.mean:.6f}",
            "autodata.gate.gain_low": f"{self.gain.low:.6f}",
            "autodata.gate.gain_high": f"{self.gain.high:.6f}",
            "autodata.gate.passed": str(self.passed).lower(),
            "autodata.gate.forced": "false",
        }


def compare(
    metric: str, candidate: ScoreResult | dict, production: ScoreResult | dict, production_source: str
) -> GateResult:
    """The gate's verdict from two scorer results holding `question_ids` and `per_question` numbers."""
    try:
        candidate, production = (
            Evidence.model_validate(r.evidence if isinstance(r, ScoreResult) else r) for r in (candidate, production)
        )
    except ValidationError as err:
        raise AutodataError(
            f"The gate compares question_ids and per_question numbers; a result lacks them: {err}"
        ) from None
    if candidate.question_ids != production.question_ids:
        raise AutodataError(
            "The candidate and production were scored on different confirm questions; score both again."
        )
    return GateResult(
        metric,
        mean_interval(candidate.per_question),
        mean_interval(production.per_question),
        paired_difference(candidate.per_question, production.per_question),
        production_source,
    )


def confirm_scorer(workspace: Workspace, study: StudySettings) -> Scorer:
    """The study's own proxy (steps, repeats, metric, number of questions), on the confirm split instead of dev."""
    if not workspace.world.has_split(CONFIRM):
        workspace.world.items(CONFIRM)  # raises the world's one-line explanation
    return proxy_scorer(
        workspace,
        steps=study.proxy_steps,
        dev_limit=study.dev_limit,
        score_metric=study.score_metric,
        repeats=study.repeats,
        split=CONFIRM,
    )


def confirm_gate(
    workspace: Workspace,
    runs_dir: Path,
    candidate: Recipe,
    production: Recipe,
    production_source: str,
    *,
    seeds: int,
    metric: str,
    scorer: Scorer,
) -> GateResult:
    """Score both recipes' data (synthesized into `runs_dir/<hash>` when not there yet) on confirm."""
    results = []
    for recipe in (candidate, production):
        scored = score_recipe(
            recipe, workspace, runs_dir / recipe.content_hash, seeds=seeds, scorer=scorer, out_name=f"proxy-{CONFIRM}"
        )
        if not scored.result.per_question:
            raise PromotionRefused(
                f"Recipe {recipe.content_hash} accepted no item on the study's {seeds} seeds: there "
                "is no data to confirm; promote with --force to override."
            )
        results.append(scored.result)
    return compare(metric, results[0], results[1], production_source)


def promotion_gate(
    name: str, chosen: TrialRow, *, force: bool, settings: Settings, storage: str, scorer: Scorer | None = None
) -> tuple[dict[str, str], str]:
    """The confirm-split gate for promoting trial `chosen` of study `name`: (tags for the registered
    version, a sentence); raises `PromotionRefused` when the gain is not above 0 at 95%. `force`: nothing
    is measured, and the tags say so. `scorer`: instead of the study's proxy on the confirm split."""
    from optimizers import tracking
    from optimizers.study import runs_dir as study_runs
    from optimizers.study import settings_for

    if force:  # the user overrides the gate: nothing is measured, and the version says so
        return {"autodata.gate.forced": "true", "autodata.gate.passed": "not measured (--force)"}, "Forced."
    study = settings_for(name, storage, {})
    runs_dir = study_runs(settings, name)
    with Workspace(settings, show_progress=False) as workspace:
        if study.world and workspace.world.fingerprint != study.world:
            raise AutodataError(f"Study {name!r} ran in another world; pass the --world it was created with.")
        candidate = trial_recipe(chosen.mlflow_run_id)
        if tracking.production_recipe_version() is None:
            production, source = Recipe(), "default recipe"
        else:
            production, version = tracking.load_registered_recipe(f"models:/{tracking.RECIPE_MODEL}@production")
            source = f"models:/{tracking.RECIPE_MODEL}/{version}"
        if production.content_hash == candidate.content_hash:
            raise PromotionRefused(
                f"Trial {chosen.trial}'s recipe is production's ({source}) already; nothing "
                "to gain. Pass --force to register it again."
            )
        gate = confirm_gate(
            workspace,
            runs_dir,
            candidate,
            production,
            source,
            seeds=study.seeds_per_trial,
            metric=study.score_metric,
            scorer=scorer or confirm_scorer(workspace, study),
        )
    if not gate.passed:
        raise PromotionRefused(
            f"Not promoted: trial {chosen.trial}'s gain is not above 0 at 95% {gate.describe()}. "
            "Run more trials or --repeats, or pass --force to promote anyway (recorded)."
        )
    return gate.tags(), f"Confirmed {gate.describe()}."


def trial_recipe(run_id: str) -> Recipe:
    """A study trial's recipe, as its MLflow run logged it (a tracking server serves it to any machine)."""
    import mlflow

    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="recipe/recipe.yaml")
    except Exception as err:  # noqa: BLE001 - MLflow raises several types for a missing artifact
        raise AutodataError(f"Run {run_id} has no recipe/recipe.yaml artifact: {err}") from None
    return load_recipe(Path(path))
