"""Recipe-optimization studies: Optuna proposes recipes, the inner loop and the proxy score them.

Each trial: a recipe from the search space (acceptance thresholds, attempts, rounds,
strategy mix, top-k, max turns, and which registered challenger prompt to use), a
synthesis run on a fixed seed budget (resumable, named by the recipe hash, so a repeated
recipe is not synthesized twice), then the scorer (the quick SFT proxy by default). Every
trial's per-question numbers are kept, so its score carries a 95% interval and its paired
difference from trial 0, the default recipe, another (`trial_rows`).
Synthesis grows in stages (half the seeds, then all by default); the score of each
earlier stage is reported to Optuna, and the median pruner stops a trial whose interim
score trails the median of earlier trials at the same data size. With
`objectives="score,calls"` the study is two-objective (score up, LLM calls per accepted
item down; no pruning, which Optuna offers for one objective only). Every
trial is an MLflow child run of the study's parent run. After a trial, the optimizer
role rewrites the challenger's instructions from the trial's rejections; the rewrite and
the version it came from are scored seed by seed on the same fixed validation seeds, and
only a rewrite whose paired 95% interval of the difference lies above 0 becomes a version
later trials may pick ("latest"); a loser is registered as rejected, for the record.

The storage is any SQLAlchemy URL (SQLite under AUTODATA_HOME by default), with
`load_if_exists`: `autodata study run NAME --trials N` runs until the study has N
finished trials, so re-running with a larger N adds the difference, and several
processes may work on one study. A trial that fails is marked FAIL with its
error; the study goes on.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import sys
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, get_args

import mlflow
import optuna
from pydantic import AliasChoices, BaseModel, Field

from autodata._io import serialize_sqlite_transactions, sqlite_created_whole
from autodata.errors import AutodataError, EndpointError
from autodata.recipe import Recipe, Strategy
from autodata.seeds import iter_seeds
from autodata.synthesis import run_totals
from autodata.workqueue import create_study_database
from autodata.workspace import Workspace
from evals.intervals import Estimate, Interval, mean_interval, paired_difference
from evals.recipe_score import RecipeScore, Scorer, acceptance_scorer, proxy_scorer, score_recipe
from optimizers import tracking
from optimizers.prompts import rewrite_from_rejections, validation_seeds

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudySettings:
    seeds_per_trial: int = 30
    proxy_steps: int = 24
    dev_limit: int = 100
    score_metric: str = "likelihood"  # the proxy's likelihood gain; em/subem/f1/format_valid generate answers
    repeats: int = 1  # proxy trainings per trial (other seeds and example orders): the interval covers them
    rewrite_prompts: bool = True
    rewrite_val_seeds: int = 4  # fixed seeds a rewrite must beat its parent on before trials may select it
    sampler_seed: int = 13
    stages: tuple[float, ...] = (0.5, 1.0)  # fractions of seeds_per_trial scored along the way (pruning)
    pruner: str = "median"  # or "none"
    objectives: str = "score"  # or "score,calls": also minimize LLM calls per accepted item
    jobs: int = 1  # trials in parallel threads of this process (more machines: same command, shared storage)
    heartbeat_interval: int = 30
    grace_period: int = 90
    world: str = ""  # the world's fingerprint: a study's trials all work in one world
    scorer: str = "proxy"  # or "acceptance": accepted items per seed, no training (smoke tests, quick sweeps)

    def stage_sizes(self) -> list[int]:
        sizes = sorted({max(1, round(self.seeds_per_trial * f)) for f in self.stages} | {self.seeds_per_trial})
        return [s for s in sizes if s <= self.seeds_per_trial]


LOOKUP_STRATEGIES = ("keep", "rephrase", "multi_hop")  # searched as their own weights (BASELINE_PARAMS)
TASK_TYPE_STRATEGIES = tuple(s for s in get_args(Strategy) if s not in LOOKUP_STRATEGIES)  # 0-0.3 each
BASELINE_PARAMS = {
    "attempts_per_solver": 3,
    "strong_min_accuracy": 0.65,
    "weak_max_accuracy": 0.5,
    "min_gap": 0.2,
    "max_rounds": 3,
    "keep": 0.6,
    "rephrase": 0.25,
    "multi_hop": 0.15,
    **{name: 0.0 for name in TASK_TYPE_STRATEGIES},
    "top_k": 3,
    "max_turns": 4,
    "hint_mode": "answer",
    "weak_mode": "closed_book",
    "llm_judge": False,
    "challenger_prompt": "seed",
}


def open_storage(url: str, study: StudySettings = StudySettings()) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeats: a trial whose process died (Ctrl-C, crash, lost machine)
    is marked FAIL after the grace period and enqueued again with the same parameters, and
    its synthesis folder (named by the recipe hash) resumes where it stopped."""
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna; users need not hear it each run
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            sqlite_created_whole(url, create_study_database),
            heartbeat_interval=study.heartbeat_interval,
            grace_period=study.grace_period,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
            engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
        )
    if storage.engine.name == "sqlite":
        serialize_sqlite_transactions(storage.engine)
    return storage


FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
SETTINGS_ATTR = "autodata.settings"
# Changing these between runs of one study would make its trials' scores incomparable.
COMPARABILITY = (
    "score_metric",
    "seeds_per_trial",
    "proxy_steps",
    "dev_limit",
    "objectives",
    "world",
    "scorer",
    "repeats",
)


def settings_for(name: str, storage: str, options: dict) -> StudySettings:
    """The settings of study `name`: `options`, and for what they leave out, those the study was
    created with (so `study run NAME --trials 5` scores new trials like the first ones)."""
    try:
        stored = optuna.load_study(study_name=name, storage=open_storage(storage)).user_attrs.get(SETTINGS_ATTR, {})
    except KeyError:
        stored = {}
    _check_world(name, stored, options.get("world"))
    for key in COMPARABILITY:
        if key in options and key in stored and options[key] != stored[key]:
            raise AutodataError(
                f"Study {name!r} scores trials with {key}={stored[key]!r}; with {options[key]!r} its "
                f"scores would not compare. Leave --{key.replace('_', '-')} out, or start a study "
                f"with another name."
            )
    merged = {**stored, **options}
    if "stages" in merged:
        merged["stages"] = tuple(merged["stages"])  # stored as a JSON list
    return StudySettings(**merged)


def _check_world(name: str, stored: dict, world: str | None) -> None:
    if world and stored.get("world") and world != stored["world"]:
        raise AutodataError(
            f"Study {name!r} runs in the world with fingerprint {stored['world']}, not in this one "
            f"({world}); pass the --world it was created with, or start a study with another name."
        )


def finished_trials(name: str, storage: str) -> int:
    """Trials of study `name` that completed or were pruned (failed ones do not count)."""
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError:
        return 0
    return sum(t.state in FINISHED for t in study.trials)


def suggest_recipe(trial: optuna.Trial, latest: dict[str, int]) -> tuple[Recipe, dict[str, int]]:
    """The trial's recipe and the prompt versions it uses (`latest`: each role's newest selectable version).

    Every parameter changes the data: the verifier's prompt is searched only when the LLM
    judge that reads it is on, and the tagger's (which only labels items) is its latest.
    """
    p = {
        "attempts_per_solver": trial.suggest_int("attempts_per_solver", 1, 3),
        "strong_min_accuracy": trial.suggest_categorical("strong_min_accuracy", [0.5, 0.65, 0.8]),
        "weak_max_accuracy": trial.suggest_categorical("weak_max_accuracy", [0.34, 0.5, 0.67]),
        "min_gap": trial.suggest_categorical("min_gap", [0.0, 0.2, 0.34]),
        "max_rounds": trial.suggest_int("max_rounds", 1, 3),
        "keep": trial.suggest_float("keep", 0.2, 1.0),
        "rephrase": trial.suggest_float("rephrase", 0.0, 1.0),
        "multi_hop": trial.suggest_float("multi_hop", 0.0, 0.5),
        **{name: trial.suggest_float(name, 0.0, 0.3) for name in TASK_TYPE_STRATEGIES},
        "top_k": trial.suggest_categorical("top_k", [3, 5]),
        "max_turns": trial.suggest_categorical("max_turns", [3, 4]),
        "hint_mode": trial.suggest_categorical("hint_mode", ["answer", "titles", "none"]),
        "weak_mode": trial.suggest_categorical("weak_mode", ["closed_book", "rag"]),
        "llm_judge": trial.suggest_categorical("llm_judge", [False, True]),
        # "seed" or "latest": fixed choices, although new prompt versions appear as the study runs
        "challenger_prompt": trial.suggest_categorical("challenger_prompt", ["seed", "latest"]),
    }
    if p["llm_judge"]:
        p["verifier_prompt"] = trial.suggest_categorical("verifier_prompt", ["seed", "latest"])
    versions = {
        "challenger": 1 if p["challenger_prompt"] == "seed" else latest["challenger"],
        "tagger": latest["tagger"],
        "verifier": latest["verifier"] if p.get("verifier_prompt") == "latest" else 1,
    }
    base = Recipe()
    # Named as the default rule is ("autodata-strong0.65-weak0.5-gap0.2"): BASELINE_PARAMS give exactly Recipe().
    rule = f"autodata-strong{p['strong_min_accuracy']}-weak{p['weak_max_accuracy']}-gap{p['min_gap']}"
    recipe = base.with_changes(
        instructions={role: tracking.load_prompt_version(role, v) for role, v in versions.items()},
        acceptance={
            "attempts_per_solver": p["attempts_per_solver"],
            "strong_min_accuracy": p["strong_min_accuracy"],
            "weak_max_accuracy": p["weak_max_accuracy"],
            "min_gap": p["min_gap"],
            "rule": rule,
        },
        max_rounds=p["max_rounds"],
        strategies={name: p[name] for name in ("keep", "rephrase", "multi_hop", *TASK_TYPE_STRATEGIES)},
        search={**base.search.model_dump(), "top_k": p["top_k"], "max_turns": p["max_turns"]},
        hint_mode=p["hint_mode"],
        weak_mode=p["weak_mode"],
        llm_judge=p["llm_judge"],
    )
    return recipe, versions


def runs_dir(settings, name: str) -> Path:
    """Where a study's synthesis folders live, one per recipe content hash."""
    return settings.home_dir / "studies" / name / "runs"


def run_study(
    name: str,
    trials: int,
    *,
    workspace: Workspace,
    study: StudySettings = StudySettings(),
    scorer: Scorer | None = None,
    storage: str | None = None,
    progress: bool = False,
) -> optuna.Study:
    """Run (or resume) study `name` until it has `trials` finished trials; see the module docstring.

    Every trial works in `workspace` (its world, retriever and one LLM session for the
    whole study). Finished means complete or pruned. Failed trials do not count, and up
    to as many again are allowed to fail; several processes on one storage stop together
    at the target.
    """
    settings = workspace.settings
    study = replace(study, world=study.world or workspace.world.fingerprint)
    experiment_id = tracking.setup(settings)
    parent = tracking.study_parent_run(experiment_id, name)
    tracking.ensure_seed_prompts()
    if scorer is None and study.scorer == "acceptance":
        scorer = acceptance_scorer
    scorer = scorer or proxy_scorer(
        workspace,
        steps=study.proxy_steps,
        dev_limit=study.dev_limit,
        score_metric=study.score_metric,
        repeats=study.repeats,
    )
    multi = study.objectives == "score,calls"
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2) if study.pruner == "median" and not multi else None
    optuna_study = optuna.create_study(
        study_name=name,
        storage=open_storage(storage or settings.effective_optuna_storage, study),
        directions=["maximize", "minimize"] if multi else ["maximize"],
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=study.sampler_seed),
        pruner=pruner or optuna.pruners.NopPruner(),
    )
    made_to = ", ".join(f"{d.name.lower()} {what}" for d, what in zip(optuna_study.directions, ("score", "calls")))
    if made_to != ("maximize score, minimize calls" if multi else "maximize score"):
        raise AutodataError(
            f"Study {name!r} was made to {made_to}; run it with the --objectives it was created "
            f"with, or start a study with another name."
        )
    _check_world(name, optuna_study.user_attrs.get(SETTINGS_ATTR, {}), study.world)
    if not optuna_study.trials:
        optuna_study.enqueue_trial(BASELINE_PARAMS)  # the shipped default recipe is trial 0
    if SETTINGS_ATTR not in optuna_study.user_attrs:
        optuna_study.set_user_attr(SETTINGS_ATTR, asdict(study))
    runs = runs_dir(settings, name)
    say = functools.partial(print, file=sys.stderr, flush=True) if progress else lambda *_: None

    def standing() -> str:
        """How far the study is: finished trials of the target, and the time left at their mean pace."""
        done = optuna_study.get_trials(deepcopy=False, states=FINISHED)
        seconds = [t.duration.total_seconds() for t in done if t.duration]
        left = trials - len(done)
        pace = f"; about {left * sum(seconds) / len(seconds) / 60:.0f} min left" if seconds and left > 0 else ""
        return f"{len(done)} of {trials} finished{pace}"

    @functools.cache
    def validation() -> list:
        """The fixed seeds every rewrite of this study is validated on (found once, on first use)."""
        return validation_seeds(
            iter_seeds(workspace.world.split_path("train")),
            workspace.retriever,
            skip=study.seeds_per_trial,
            count=study.rewrite_val_seeds,
        )

    def objective(trial: optuna.Trial) -> float | tuple[float, float]:
        latest = {role: tracking.latest_prompt_version(role) or 1 for role in tracking.OPTIMIZABLE_PROMPTS}
        recipe, versions = suggest_recipe(trial, latest)
        trial.set_user_attr("recipe_hash", recipe.content_hash)
        trial.set_user_attr("prompt_versions", versions)
        with mlflow.start_run(
            run_name=f"{name} trial {trial.number}",
            parent_run_id=parent,
            experiment_id=experiment_id,
            tags={"autodata.study": name, "autodata.kind": "trial", "autodata.trial": str(trial.number)},
        ) as run:
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
            mlflow.log_params(
                {
                    **trial.params,
                    "recipe_hash": recipe.content_hash,
                    "hint_mode": recipe.hint_mode,
                    **{f"prompt.{r}": f"prompts:/{tracking.prompt_name(r)}/{v}" for r, v in versions.items()},
                }
            )
            run_dir = runs / recipe.content_hash
            say(
                f"trial {trial.number} ({standing()}): synthesis from {study.seeds_per_trial} seeds, then the "
                f"proxy ({study.score_metric}, {study.repeats} repeat(s)); recipe {recipe.content_hash}"
            )
            with _exclusive(run_dir):  # trials that drew the same recipe share its folder, one at a time
                # > 0 when an earlier trial with this recipe (or this one before a crash) left seeds done
                trial.set_user_attr("seeds_resumed", run_totals(run_dir)["seeds_done"])
                if not multi:
                    _report_interim_scores(trial, recipe, run_dir, scorer, study, workspace)
                final = score_recipe(recipe, workspace, run_dir, seeds=study.seeds_per_trial, scorer=scorer)
                _record(trial, final, optuna_study)
                interval = final.result.score_interval
                say(
                    f"trial {trial.number}: {final.metrics['accepted_items']:.0f} items accepted; score "
                    f"{final.score:.3f}" + (f" [{interval.low:.3f}, {interval.high:.3f}]" if interval else "")
                )
                tracking.log_run_folder(run_dir, recipe)
            if study.rewrite_prompts:
                try:
                    rewrite_from_rejections(
                        workspace.llms,
                        recipe,
                        run_dir,
                        trial.number,
                        final.score,
                        retriever=workspace.retriever,
                        val_seeds=validation(),
                        parent_version=versions["challenger"],
                    )
                except EndpointError as err:  # the trial's score is measured and stands; only the rewrite is lost
                    logger.warning("trial %d: no challenger rewrite: %s", trial.number, err)
                    trial.set_user_attr("prompt_rewrite_error", str(err))
                    mlflow.set_tag("autodata.prompt_rewrite_error", str(err)[:5000])
            return (final.score, final.metrics["llm_calls_per_accepted_item"]) if multi else final.score

    # Any failure ends only its trial (state FAIL, error logged in its MLflow run); the study goes on.
    missing = trials - sum(t.state in FINISHED for t in optuna_study.trials)
    if missing > 0:
        optuna_study.optimize(
            objective,
            n_trials=2 * missing,
            n_jobs=study.jobs,
            catch=(Exception,),
            callbacks=[
                optuna.study.MaxTrialsCallback(trials, states=FINISHED),
                functools.partial(_log_trial_table, parent),
            ],
        )
    from optimizers.study_report import study_report  # it reads this module's trial table

    page = study_report(name, storage or settings.effective_optuna_storage, runs.parent / "report.html", runs_dir=runs)
    mlflow.MlflowClient().log_artifact(parent, str(page))  # the study's page beside its trial table
    return optuna_study


def _log_trial_table(parent_run_id: str, study: optuna.Study, _trial) -> None:
    """The study's parent run holds the trial table (score and delta vs default with their intervals)."""
    rows, best = trial_rows(study)
    table = {"trials": [row.model_dump(mode="json") for row in rows], "best": best and best.model_dump(mode="json")}
    mlflow.MlflowClient().log_dict(parent_run_id, table, "trials.json")


def _report_interim_scores(
    trial: optuna.Trial, recipe: Recipe, run_dir: Path, scorer: Scorer, study: StudySettings, workspace: Workspace
) -> None:
    """Score the data of each earlier stage, so the pruner can stop a bad trial before it is all made."""
    for seeds_now in study.stage_sizes()[:-1]:
        interim = score_recipe(
            recipe, workspace, run_dir, seeds=seeds_now, scorer=scorer, out_name=f"proxy-{seeds_now}"
        )
        trial.report(interim.score, step=seeds_now)
        mlflow.log_metric("interim_score", interim.score, step=seeds_now)
        if trial.should_prune():
            mlflow.set_tag("autodata.pruned_at_seeds", str(seeds_now))
            mlflow.end_run("KILLED")
            raise optuna.TrialPruned(f"interim score {interim.score:.3f} at {seeds_now} seeds")


def _record(trial: optuna.Trial, final: RecipeScore, study: optuna.Study) -> None:
    """The trial's final numbers, on the Optuna trial and in its MLflow run: the score with its interval,
    the per-question numbers it came from (for paired comparisons), and its difference from trial 0."""
    mlflow.log_metrics(final.metrics)
    result = final.result.record()
    for key in ("acceptance_rate", "accepted_per_seed", "accepted_items", "llm_calls_per_accepted_item", "score"):
        trial.set_user_attr(key, final.metrics.get(key, result.get(key)))
    evidence = final.result.evidence
    trial.set_user_attr("evidence", evidence)
    if interval := final.result.score_interval:
        mlflow.log_metrics({"score_low": interval.low, "score_high": interval.high})
    default = next((t for t in study.get_trials(deepcopy=False) if t.number == 0), None)
    if default is not None and default.number != trial.number:
        delta = difference(evidence, default.user_attrs.get("evidence"))
        if delta is not None:
            mlflow.log_metrics({"delta_vs_default": delta.mean, "delta_low": delta.low, "delta_high": delta.high})


def difference(evidence: dict | None, baseline: dict | None) -> Estimate | None:
    """Paired difference of two trials' scores on their common questions (None when they share none)."""
    if not evidence or not baseline or not evidence.get("per_question") or not baseline.get("per_question"):
        return None
    if evidence["question_ids"] != baseline["question_ids"]:
        return None
    return paired_difference(evidence["per_question"], baseline["per_question"])


@contextmanager
def _exclusive(folder: Path):
    """An advisory lock on `folder`, held across processes (and threads: one open file each)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- reading studies -------------------------------------------------------------------------


class TrialRow(BaseModel):
    """One trial of a study as `autodata study show`, the service's study detail and the study's MLflow
    `trials.json` show it (`trial_rows`)."""

    trial: int
    state: str  # Optuna's TrialState name: COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    score: float | None  # the first objective's value (None before the trial ends, or when it failed)
    recipe_hash: str | None
    acceptance_rate: float | None
    accepted: int | None  # accepted items in the trial's data
    accepted_per_seed: float | None
    calls_per_item: float | None  # LLM calls per accepted item
    # the recipe's acceptance.attempts_per_solver: the attempts each solver (strong, weak) gets per question;
    # trials.json rows written before it was named so call it "attempts"
    solver_attempts: int | None = Field(validation_alias=AliasChoices("solver_attempts", "attempts"))
    rounds: int | None  # max_rounds
    top_k: int | None
    challenger_prompt: str | None  # "seed" or "latest"
    mlflow_run_id: str | None
    params: dict[str, Any]  # every searched parameter, as Optuna suggested it
    prompt_versions: dict[str, int] | None
    score_interval: Interval | None  # the score's 95% interval (None: no per-question numbers)
    delta_vs_default: Interval | None  # the paired difference from trial 0, the default recipe
    pareto: bool = False  # on the Pareto front of a two-objective study


def study_table(name: str, storage: str) -> tuple[list[TrialRow], TrialRow | None]:
    """One row per trial, and the best trial's row."""
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError as err:
        raise AutodataError(
            f"No study named {name!r} in {storage}. Start one with `autodata study run {name}`."
        ) from err
    return trial_rows(study)


def trial_rows(study: optuna.Study) -> tuple[list[TrialRow], TrialRow | None]:
    """`study_table` of a loaded study."""
    default = next((t for t in study.trials if t.number == 0), None)
    # With two objectives, the best is the highest score on the Pareto front (score vs calls per item).
    front = {t.number for t in study.best_trials} if len(study.directions) > 1 else None
    rows = [
        TrialRow(
            trial=t.number,
            state=t.state.name,
            score=t.values[0] if t.values else None,
            recipe_hash=t.user_attrs.get("recipe_hash"),
            acceptance_rate=t.user_attrs.get("acceptance_rate"),
            accepted=t.user_attrs.get("accepted_items"),
            accepted_per_seed=t.user_attrs.get("accepted_per_seed"),
            calls_per_item=t.user_attrs.get("llm_calls_per_accepted_item"),
            solver_attempts=t.params.get("attempts_per_solver"),
            rounds=t.params.get("max_rounds"),
            top_k=t.params.get("top_k"),
            challenger_prompt=t.params.get("challenger_prompt"),
            mlflow_run_id=t.user_attrs.get("mlflow_run_id"),
            params=t.params,
            prompt_versions=t.user_attrs.get("prompt_versions"),
            **_intervals(t, default),
            pareto=front is not None and t.number in front,
        )
        for t in study.trials
    ]
    complete = [r for r in rows if r.state == "COMPLETE" and (front is None or r.pareto)]
    best = max(complete, key=lambda r: (r.score, -r.trial)) if complete else None
    return rows, best


def _intervals(trial: optuna.trial.FrozenTrial, default: optuna.trial.FrozenTrial | None) -> dict[str, Interval | None]:
    """The trial's score interval and its paired difference from trial 0 (the default recipe), each None
    when the trial has no per-question numbers."""
    evidence = trial.user_attrs.get("evidence") or {}
    score = mean_interval(evidence["per_question"]) if evidence.get("per_question") else None
    delta = difference(evidence, default.user_attrs.get("evidence")) if default is not None else None
    return {
        "score_interval": score.as_interval() if score else None,
        "delta_vs_default": delta.as_interval() if delta else None,
    }
