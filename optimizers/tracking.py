"""MLflow for autodata: one experiment, a parent run per study, prompt and recipe registries.

Tracking defaults to SQLite under AUTODATA_HOME (MLflow's file store is being retired);
artifacts go to `<home>/mlartifacts` rather than `./mlruns` under whatever folder a user
ran from. Child runs name their parent explicitly (`parent_run_id`), which links them
also from worker threads, and every run is opened with `with`, so an exception marks it
FAILED instead of leaving it active.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from autodata._io import atomic_write_jsonl, iter_jsonl, sqlite_created_whole
from autodata.errors import AutodataError
from autodata.recipe import Recipe, parse_recipe
from autodata.settings import Settings
from prompts import load_prompt

logger = logging.getLogger(__name__)

EXPERIMENT = "autodata"
RECIPE_MODEL = "autodata-recipe"
OPTIMIZABLE_PROMPTS = ("challenger", "tagger", "verifier")


def prompt_name(role: str) -> str:
    return f"autodata.{role}"


def setup(settings: Settings) -> str:
    """Point MLflow at the settings' tracking URI; returns the experiment id.

    With a tracking server (http/https), the server chooses where artifacts go (with
    `mlflow server`'s default `--serve-artifacts`, `mlflow-artifacts:/` locations it
    stores and serves itself), so a recipe promoted on one machine is readable on any
    other. With a database URI, artifacts go to `<home>/mlartifacts`.
    """
    create = functools.partial(_create_tracking_tables, artifacts=settings.home_dir / "mlartifacts")
    uri = sqlite_created_whole(settings.effective_tracking_uri, create)
    mlflow.set_tracking_uri(uri)
    # Workers starting together on a fresh database race to create MLflow's tables and the
    # experiment; the loser's error is transient, so look again after a pause.
    for attempt in range(5):
        try:
            return _experiment_id(settings, uri)
        except Exception as err:  # alembic, SQLAlchemy or MLflow errors, by backend
            if "_alembic_tmp_" in str(err):  # a migration killed midway: no retry can finish it
                raise AutodataError(
                    f"MLflow's database {uri} was left half-created by an interrupted first start (before "
                    "autodata built it whole); it holds no runs. Move it aside and run again."
                ) from err
            if attempt == 4:
                raise
            logger.info("MLflow setup raced another process (%s); trying again", type(err).__name__)
            time.sleep(1 + attempt)


def log_run_folder(run_dir: Path, recipe: Recipe) -> None:
    """Into the active MLflow run: the recipe, the manifest, 20 sample items, the proxy's
    predictions (a trial's) and the run's HTML page (`autodata report`), to look at in the UI."""
    from autodata.report import run_report

    folder = run_dir / "mlflow"
    folder.mkdir(exist_ok=True)
    (folder / "recipe.yaml").write_text(recipe.to_yaml(), encoding="utf-8")
    mlflow.log_artifact(str(folder / "recipe.yaml"), artifact_path="recipe")
    mlflow.log_artifact(str(run_dir / "manifest.json"))
    samples = itertools.islice(iter_jsonl(run_dir / "trajectories.jsonl"), 20)
    atomic_write_jsonl(folder / "sample_trajectories.jsonl", samples)
    mlflow.log_artifact(str(folder / "sample_trajectories.jsonl"))
    predictions = run_dir / "proxy" / "eval-tuned" / "predictions.json"
    if predictions.is_file():
        mlflow.log_artifact(str(predictions))
    mlflow.log_artifact(str(run_report(run_dir, folder / "report.html")))


def log_synthesis(settings: Settings, run_dir: Path, recipe: Recipe, manifest: dict) -> str:
    """One MLflow run (tag `autodata.kind=synthesis`) for a synthesis outside a study: the
    recipe's hash and source as params, the manifest's counts as metrics, `log_run_folder`'s
    artifacts. Returns the run id."""
    experiment_id = setup(settings)
    items, seeds = manifest["items"], manifest["seeds"]
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"synthesis {run_dir.name}", tags={"autodata.kind": "synthesis"}
    ) as run:
        mlflow.log_params(
            {"recipe_hash": recipe.content_hash, "recipe_name": recipe.name, "hint_mode": recipe.hint_mode,
             "output": str(run_dir.resolve())}
        )  # fmt: skip
        mlflow.log_metrics(
            {
                "seeds_done": seeds["done"],
                "seeds_with_evidence": seeds["with_evidence"],
                "accepted_items": items["accepted"],
                "items_in_datasets": items["in_datasets"],
                "accepted_per_seed": manifest["accepted_per_seed"],
                **{f"rejected.{reason}": n for reason, n in manifest["rejections"].items()},
            }
        )
        log_run_folder(run_dir, recipe)
        return run.info.run_id


def _create_tracking_tables(url: str, *, artifacts: Path) -> None:
    """MLflow's tables (tracking, registry, prompts), migrated to this MLflow's schema."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    artifacts.mkdir(parents=True, exist_ok=True)
    SqlAlchemyStore(url, artifacts.as_uri()).engine.dispose()


def _experiment_id(settings: Settings, uri: str) -> str:
    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    if uses_tracking_server(uri):
        return client.create_experiment(EXPERIMENT)
    artifacts = settings.home_dir / "mlartifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    return client.create_experiment(EXPERIMENT, artifact_location=artifacts.as_uri())


def uses_tracking_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def study_parent_run(experiment_id: str, study: str) -> str:
    """The study's parent run id, created on first use (re-running a study reuses it)."""
    client = MlflowClient()
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`autodata.study` = '{study}' and tags.`autodata.kind` = 'study'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(
        experiment_id, run_name=f"study {study}", tags={"autodata.study": study, "autodata.kind": "study"}
    )
    client.set_terminated(run.info.run_id)
    # Two workers starting the study together may both have created one: all keep the oldest.
    parents = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`autodata.study` = '{study}' and tags.`autodata.kind` = 'study'",
        order_by=["attributes.start_time ASC"],
    )
    for extra in parents[1:]:
        if extra.info.run_id == run.info.run_id:
            client.delete_run(run.info.run_id)
    return parents[0].info.run_id


def ensure_seed_prompts() -> dict[str, int]:
    """Register the shipped prompt texts as version 1 where a prompt has no version yet."""
    versions = {}
    for role in OPTIMIZABLE_PROMPTS:
        latest = latest_prompt_version(role)
        if latest is None:
            prompt = mlflow.genai.register_prompt(
                name=prompt_name(role), template=load_prompt(role), commit_message="seed prompt shipped with autodata"
            )
            latest = int(prompt.version)
        versions[role] = latest
    return versions


def _absent(err: MlflowException) -> bool:
    """MLflow's answer for a prompt or model that does not exist yet, or an alias not set yet.

    Only these read as "none"; any other error (the server down, a locked database) is raised,
    since reading it as "none" would change state: the seed prompt registered again over
    validated versions, a promotion that records no previous version (rollback impossible).
    """
    return err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


STATUS_TAG = "autodata.status"  # "accepted" (selectable as latest) or "rejected" (kept for inspection only)


def prompt_versions(role: str) -> list:
    """Every registered version of the role's prompt, oldest first ([] before the first)."""
    try:
        found = MlflowClient().search_prompt_versions(prompt_name(role))
    except MlflowException as err:
        if _absent(err):
            return []
        raise AutodataError(f"MLflow could not list the {role} prompt's versions: {err.message}") from err
    return sorted(getattr(found, "prompt_versions", found), key=lambda v: int(v.version))


def latest_prompt_version(role: str) -> int | None:
    """The newest version trials may select: not one marked rejected by validation."""
    versions = [
        int(v.version) for v in prompt_versions(role) if (v.tags or {}).get(STATUS_TAG, "accepted") == "accepted"
    ]
    return max(versions) if versions else None


def load_prompt_version(role: str, version: int) -> str:
    return mlflow.genai.load_prompt(f"prompts:/{prompt_name(role)}/{version}").template


def register_prompt_version(
    role: str, text: str, message: str, *, accepted: bool = True, evidence: dict[str, str | int | float] | None = None
) -> int:
    """A new version of the role's prompt; `accepted=False` registers a candidate that lost its
    validation (visible in the registry, never selected as "latest"). `evidence` (how it was
    judged: scores, interval, split) becomes `autodata.KEY` tags, floats to 4 decimals."""
    tags = {
        STATUS_TAG: "accepted" if accepted else "rejected",
        **{f"autodata.{k}": f"{v:.4f}" if isinstance(v, float) else str(v) for k, v in (evidence or {}).items()},
    }
    prompt = mlflow.genai.register_prompt(name=prompt_name(role), template=text, commit_message=message, tags=tags)
    return int(prompt.version)


def register_recipe(run_id: str) -> int:
    """A new version of the `autodata-recipe` model from a trial run's `recipe/` artifacts."""
    client = MlflowClient()
    try:
        client.create_registered_model(RECIPE_MODEL, description="autodata data recipes; alias production is live")
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":  # any other error: the registry is not there to use
            raise
    version = client.create_model_version(RECIPE_MODEL, source=f"runs:/{run_id}/recipe", run_id=run_id)
    return int(version.version)


def production_recipe_version() -> int | None:
    try:
        return int(MlflowClient().get_model_version_by_alias(RECIPE_MODEL, "production").version)
    except MlflowException as err:
        if _absent(err):
            return None
        raise AutodataError(f"MLflow could not read the production recipe: {err.message}") from err


def load_registered_recipe(uri: str) -> tuple[Recipe, int]:
    """A recipe from `models:/autodata-recipe@production` (or `/N`), with its version."""
    try:
        folder = Path(mlflow.artifacts.download_artifacts(uri))
    except MlflowException as err:
        raise AutodataError(
            f"No recipe at {uri}: {err.message}. Promote a study trial with `autodata promote`."
        ) from err
    import yaml

    recipe = parse_recipe(yaml.safe_load((folder / "recipe.yaml").read_text(encoding="utf-8")), source=uri)
    if uri.endswith("@production"):
        version = production_recipe_version()
    else:
        version = int(uri.rsplit("/", 1)[-1])
    return recipe, version


def promote(
    run_id: str, prompt_versions: dict[str, int], *, tags: dict[str, str] | None = None
) -> tuple[int, int | None]:
    """Register the run's recipe, move `production` to it and to its prompts; (new, previous) version.

    The previous production versions (recipe and prompts) are kept as tags on the new
    version, so `rollback` can restore them; `tags` add the promotion's evidence.
    """
    client = MlflowClient()
    previous = production_recipe_version()
    version = register_recipe(run_id)
    tags = {**(tags or {}), "autodata.previous_recipe": str(previous or "")}
    for role, prompt_version in prompt_versions.items():
        before = _prompt_alias(role)
        tags[f"autodata.previous_prompt.{role}"] = str(before or "")
        mlflow.genai.set_prompt_alias(prompt_name(role), alias="production", version=prompt_version)
    for key, value in tags.items():
        client.set_model_version_tag(RECIPE_MODEL, str(version), key, value)
    client.set_registered_model_alias(RECIPE_MODEL, "production", str(version))
    return version, previous


def rollback() -> tuple[int, int]:
    """Move `production` back to the versions in force before the last promotion; (from, to)."""
    client = MlflowClient()
    current = production_recipe_version()
    if current is None:
        raise AutodataError("Nothing to roll back: no recipe has the production alias.")
    tags = client.get_model_version(RECIPE_MODEL, str(current)).tags
    previous = tags.get("autodata.previous_recipe")
    if not previous:
        raise AutodataError(f"Recipe version {current} was the first promoted; there is no earlier one to restore.")
    client.set_registered_model_alias(RECIPE_MODEL, "production", previous)
    for role in OPTIMIZABLE_PROMPTS:
        before = tags.get(f"autodata.previous_prompt.{role}")
        if before:
            mlflow.genai.set_prompt_alias(prompt_name(role), alias="production", version=int(before))
    return current, int(previous)


def _prompt_alias(role: str) -> int | None:
    try:
        return int(MlflowClient().get_prompt_version_by_alias(prompt_name(role), "production").version)
    except MlflowException as err:
        if _absent(err):
            return None
        raise AutodataError(f"MLflow could not read the {role} prompt's production alias: {err.message}") from err
