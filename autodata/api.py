"""The library API. The CLI (and any service) only converts input and output around it.

Each call builds a `Workspace` (world, retriever, LLM session) from the settings and hands
it to the code that does the work; nothing below this module imports it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from autodata.answers import sub_exact_match
from autodata.errors import AutodataError, CorpusError
from autodata.llm import Budget, LLMSession
from autodata.recipe import Recipe, load_recipe
from autodata.search import BM25Index, Hit, Retriever
from autodata.search.build import INDEX_META_FILE
from autodata.seeds import find_contamination, find_near_duplicates, load_seeds
from autodata.settings import ROLE_NAMES, RoleName, Settings, load_settings
from autodata.synthesis import SeedExecutor, SynthesisReport
from autodata.workspace import Workspace
from autodata.world import WorldPlan, WorldResult
from autodata.world import create_world as _create_world
from autodata.world import prepare_world as _prepare_world
from evals.scoring import score_predictions_file

if TYPE_CHECKING:
    from evals.records import ProxyResult
    from optimizers.study import TrialRow

logger = logging.getLogger(__name__)


def prepare_world(
    settings: Settings | None = None, *, force: bool = False, show_progress: bool = True, plan: WorldPlan = WorldPlan()
) -> WorldResult:
    """Fetch and build the demo world (corpus, seed splits, BM25 index) under the home folder.

    Example:
        >>> result = prepare_world()  # doctest: +SKIP
        >>> result.manifest["seeds"]["splits"]  # doctest: +SKIP
        {'train': 1742, 'dev': 500, 'test': 500}
    """
    settings = settings or load_settings()
    return _prepare_world(
        settings.demo_world_dir, settings.cache_dir / "packages", plan, force=force, show_progress=show_progress
    )


def create_world(
    out: Path,
    *,
    train: Path,
    dev: Path,
    test: Path | None = None,
    confirm: Path | None = None,
    confirm_size: int = 200,
    corpus: Path | None = None,
    retriever_url: str | None = None,
    name: str | None = None,
    force: bool = False,
    show_progress: bool = True,
) -> WorldResult:
    """A world folder from your own seed files and a corpus or retriever URL (see `autodata.world.create_world`).

    Example:
        >>> create_world(Path("worlds/mine"), train=Path("train.jsonl"), dev=Path("dev.jsonl"),
        ...              corpus=Path("corpus.jsonl"))  # doctest: +SKIP
    """
    return _create_world(
        out,
        train=train,
        dev=dev,
        test=test,
        confirm=confirm,
        confirm_size=confirm_size,
        corpus=corpus,
        retriever_url=retriever_url,
        name=name,
        force=force,
        show_progress=show_progress,
    )


def build_index(corpus: Path, out: Path, *, force: bool = False, show_progress: bool = True) -> tuple[BM25Index, bool]:
    """Build a BM25 index of a Search-R1 corpus file; returns (index, whether it was built).

    An index already built from the same corpus bytes is reused unless `force`. A folder at
    `out` that holds files but no index (nothing autodata built) is refused, never replaced.
    """
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not (out / INDEX_META_FILE).is_file():
        raise CorpusError(
            f"{out} holds files but no autodata index ({INDEX_META_FILE}); building there would replace them. "
            "Choose another --out, or empty the folder."
        )
    if not force and out.exists():
        try:
            existing = BM25Index.load(out)
            if existing.is_built_from(corpus):
                return existing, False
        except CorpusError:
            pass  # our index, of another format version or damaged: rebuild it
    return BM25Index.build(corpus, out, show_progress=show_progress), True


def retriever(settings: Settings | None = None) -> Retriever:
    """The configured retriever: `retriever.url` or `retriever.index_dir` if set, else the world's own."""
    return Workspace(settings or load_settings()).retriever


def search(queries: Sequence[str], *, topk: int = 3, settings: Settings | None = None) -> list[list[Hit]]:
    """Search the configured retriever (see `retriever`).

    Example:
        >>> search(["who wrote hamlet"], topk=1)[0][0].title  # doctest: +SKIP
        '"Hamlet"'
    """
    with Workspace(settings or load_settings()) as workspace:
        return workspace.retriever.search(list(queries), topk=topk)


def world_files(settings: Settings | None = None) -> dict:
    """The configured world's folder, retriever, corpus and held-out split files (for CLI defaults)."""
    world = Workspace(settings or load_settings()).world
    return {
        "dir": world.dir,
        "name": world.name,
        "index_dir": world.index_dir,
        "corpus": world.corpus_path,
        "retriever_url": world.retriever_url,
        "held_out": [world.split_path(s) for s in ("dev", "test", "confirm") if world.has_split(s)],
    }


def serve_retriever(index_dir: Path, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve an index with the Search-R1 `/retrieve` API until interrupted."""
    import uvicorn

    from autodata.search.server import create_app

    index = BM25Index.load(index_dir)
    uvicorn.run(create_app(index, documents=len(index)), host=host, port=port, log_level="warning")


def check_data(
    path: Path,
    against: Sequence[Path] = (),
    *,
    near_duplicate_threshold: float = 0.8,
    ngram: int = 5,
    min_overlap: float = 0.5,
) -> dict:
    """Near duplicates inside a seed file and its contamination against held-out files.

    Returns a report dict; `clean` is False when anything was found.
    """
    items = load_seeds(path, require_answers=False)
    duplicates = find_near_duplicates(items, threshold=near_duplicate_threshold)
    report: dict = {
        "file": str(path),
        "records": len(items),
        "near_duplicates": {
            "threshold": near_duplicate_threshold,
            "pairs": len(duplicates),
            "examples": [list(p) for p in duplicates[:10]],
        },
        "contamination": [],
    }
    for other in against:
        found = find_contamination(items, load_seeds(other, require_answers=False), n=ngram, min_overlap=min_overlap)
        report["contamination"].append(
            {
                "against": str(other),
                "ngram": ngram,
                "min_overlap": min_overlap,
                "contaminated": len(found),
                "examples": found[:10],
            }
        )
    report["clean"] = not duplicates and not any(c["contaminated"] for c in report["contamination"])
    return report


def score(predictions: Path, answers: Path, *, regex: bool = False) -> dict:
    """EM, SubEM and F1 of a predictions file against a FlashRAG answer file."""
    return score_predictions_file(predictions, answers, regex=regex)


def demo_searches(settings: Settings | None = None, *, questions: int = 5, topk: int = 3) -> list[dict]:
    """Search the first dev questions of the world; report whether an answer came back."""
    with Workspace(settings or load_settings()) as workspace:
        items = workspace.world.items("dev")[:questions]
        results = workspace.retriever.search([item.question for item in items], topk=topk)
    return [
        {
            "question": item.question,
            "golden_answers": item.golden_answers,
            "titles": [hit.title for hit in hits],
            "answer_in_hits": any(sub_exact_match(hit.contents, item.golden_answers) for hit in hits),
        }
        for item, hits in zip(items, results)
    ]


CHECK_PROMPT = "Reply with one short sentence: what is the capital of France?"


def check_llms(settings: Settings | None = None, roles: Sequence[RoleName] = ROLE_NAMES) -> list[dict]:
    """Send one short chat request per role; report endpoint, model, latency and reply or error.

    Roles without an endpoint share the embedded model, started for the check and
    stopped after it.
    """
    settings = settings or load_settings()
    rows = []
    with LLMSession(settings, cache=False) as llms:
        for role in roles:
            endpoint = settings.endpoint(role)
            row = {"role": role, "endpoint": endpoint.base_url or "embedded", "model": endpoint.model}
            try:
                client = llms.client(role)
                row["endpoint"] = client.base_url if endpoint.base_url else f"embedded ({client.base_url})"
                started = time.monotonic()
                completion = client.chat([{"role": "user", "content": CHECK_PROMPT}], max_tokens=32, temperature=0.0)
                row |= {"latency_s": round(time.monotonic() - started, 3), "reply": completion.text.strip(), "ok": True}
            except AutodataError as err:
                row |= {"ok": False, "error": str(err)}
            rows.append(row)
    return rows


def serve_llm(settings: Settings | None = None, *, port: int | None = None, on_ready=None) -> None:
    """Run the embedded model's OpenAI-compatible server in the foreground until Ctrl-C."""
    from autodata.llm.embedded import EmbeddedServer, locate_gguf

    settings = settings or load_settings()
    gguf = locate_gguf(settings.embedded, settings.cache_dir)
    log_file = settings.home_dir / "logs" / "embedded-llm.log"
    with EmbeddedServer(gguf, settings.embedded, log_file=log_file, port=port) as server:
        if on_ready:
            on_ready(server)
        while True:
            time.sleep(3600)


def resolve_recipe(spec: str | Path | None, settings: Settings | None = None) -> tuple[Recipe, str]:
    """A recipe and where it came from: `None`/"default" (shipped), "production" or a
    `models:/autodata-recipe@ALIAS` / `/N` URI (the MLflow registry), or a YAML file."""
    if spec is None or str(spec) == "default":
        return Recipe(), "default"
    if str(spec) == "production" or str(spec).startswith("models:/"):
        from optimizers import tracking

        tracking.setup(settings or load_settings())
        uri = "models:/autodata-recipe@production" if str(spec) == "production" else str(spec)
        recipe, version = tracking.load_registered_recipe(uri)
        return recipe, f"models:/autodata-recipe/{version}"
    return load_recipe(Path(spec)), str(Path(spec).resolve())


def synthesize(
    out: Path,
    *,
    recipe: Recipe | None = None,
    seeds: Path | None = None,
    limit: int | None = None,
    concurrency: int | None = None,
    budget: Budget = Budget(),
    settings: Settings | None = None,
    show_progress: bool = True,
    recipe_source: str = "default",
    executor: Callable[..., SeedExecutor] | None = None,
    target_accepted: int | None = None,
    fence: Callable[[], None] | None = None,
) -> tuple[SynthesisReport, dict]:
    """Turn seeds into verified search-augmented trajectories in `out` (resumable).

    Without `seeds`, uses the world's train split; with `target_accepted`, only until that many
    items are accepted (or the seeds run out: the manifest's `target` says which). Contamination is always gated against
    the world's dev and test questions. `concurrency` defaults to what the endpoints
    allow. `executor` and `fence`: see `autodata.synthesis.synthesize` (e.g. a `RayExecutor`). Returns the
    report and the job's LLM usage summary.

    Example:
        >>> report, usage = synthesize(Path("runs/demo"), limit=5)  # doctest: +SKIP
        >>> report.manifest["items"]["accepted"]  # doctest: +SKIP
        3
    """
    with Workspace(settings or load_settings(), budget=budget, show_progress=show_progress) as workspace:
        report = workspace.synthesize(
            Path(out),
            recipe=recipe or Recipe(),
            seeds=seeds,
            limit=limit,
            concurrency=concurrency,
            recipe_source=recipe_source,
            executor=executor,
            target_accepted=target_accepted,
            fence=fence,
        )
        return report, workspace.llms.usage.summary()


def evaluate_split(
    out: Path,
    *,
    split: str = "dev",
    limit: int | None = None,
    role: RoleName = "student",
    baselines: bool = False,
    concurrency: int = 1,
    settings: Settings | None = None,
    show_progress: bool = True,
) -> dict[str, dict | None]:
    """Run `role` over a split of the world in the search-agent loop (and baselines); metrics per mode.

    Writes OUT/predictions.json, OUT/trajectories.jsonl and (dev) OUT/metrics.json; with
    `baselines`, the same under OUT/baselines/direct and OUT/baselines/naive_rag.
    """
    from evals.evaluate import LoopSettings, evaluate

    workspace = Workspace(settings or load_settings())
    items = workspace.world.items(split)
    items = items[:limit] if limit is not None else items
    search = Recipe().search
    loop = LoopSettings(
        top_k=search.top_k,
        max_turns=search.max_turns,
        max_observation_tokens=search.max_observation_tokens,
        observation_tokenizer=search.observation_tokenizer,
    )
    modes = {"search_agent": Path(out)}
    if baselines:
        modes |= {"direct": Path(out) / "baselines" / "direct", "naive_rag": Path(out) / "baselines" / "naive_rag"}
    results = {}
    with workspace:
        client, search_with = workspace.llms.client(role), workspace.retriever
        for mode, folder in modes.items():
            results[mode] = evaluate(
                items,
                folder,
                client=client,
                retriever=search_with,
                loop=loop,
                mode=mode,
                concurrency=concurrency,
                show_progress=show_progress,
            )
    return results


def study_report(
    name: str, *, out: Path | None = None, storage: str | None = None, settings: Settings | None = None
) -> Path:
    """The study's HTML page (`optimizers.study_report`), by default `<home>/studies/NAME/report.html`."""
    from optimizers import tracking
    from optimizers.study import runs_dir
    from optimizers.study_report import study_report as write_page

    settings = settings or load_settings()
    tracking.setup(settings)  # the prompt texts come from MLflow's prompt registry
    runs = runs_dir(settings, name)
    return write_page(
        name, storage or settings.effective_optuna_storage, out or runs.parent / "report.html", runs_dir=runs
    )


def export_hf(data_dir: Path, out: Path, *, settings: Settings | None = None) -> dict:
    """A Hugging Face dataset folder from a finished synthesis run: Parquet shards, a dataset card
    and LLaMA-Factory's `dataset_info.json` (see `autodata.export_hf`). The card's world and
    licence are the configured world's (a run folder does not name its world), if there is one."""
    from autodata.export_hf import export_hf as write_dataset

    settings = settings or load_settings()
    world_dir = settings.world_dir
    manifest = world_dir / "manifest.json"
    world = json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else None
    return write_dataset(Path(data_dir), Path(out), world_manifest=world)


def export_llamafactory(
    data_dir: Path,
    *,
    model: str = "Qwen/Qwen2.5-7B-Instruct",
    output_dir: str = "saves/qwen2_5-7b-instruct/full/search_sft",
) -> Path:
    """Write the LLaMA-Factory training YAML next to a synthesis run's ShareGPT data.

    Checks that `data_dir` holds a non-empty `sft_dataset.json` that LLaMA-Factory would
    accept whole; returns the YAML path (train with `llamafactory-cli train YAML`).
    """

    import yaml

    from autodata._io import atomic_write_json, atomic_write_text
    from autodata.errors import SeedDataError
    from autodata.export import dataset_info, llamafactory_config
    from autodata.trajectory import sharegpt_problems

    data_dir = Path(data_dir)
    sft = data_dir / "sft_dataset.json"
    if not sft.is_file():
        raise SeedDataError(f"{sft} does not exist: run `autodata synthesize --out {data_dir}` to completion first.")
    examples = json.loads(sft.read_text(encoding="utf-8"))
    if not examples:
        raise SeedDataError(f"{sft} holds no examples: the synthesis run accepted nothing.")
    for index, example in enumerate(examples):
        if problems := sharegpt_problems(example):
            raise SeedDataError(f"{sft}, record {index}: LLaMA-Factory would skip it: {'; '.join(problems)}")
    atomic_write_json(data_dir / "dataset_info.json", dataset_info(sft.name))
    config_path = data_dir / "qwen2_5_7b_instruct_full_sft.yaml"
    atomic_write_text(
        config_path, yaml.safe_dump(llamafactory_config(data_dir, model=model, output_dir=output_dir), sort_keys=False)
    )
    return config_path


def run_proxy(
    data: Path,
    out: Path,
    *,
    student: Path | None = None,
    steps: int | None = None,
    dev_limit: int | None = None,
    score_metric: str | None = None,
    repeats: int | None = None,
    generate: bool | None = None,
    settings: Settings | None = None,
) -> ProxyResult:
    """The quick SFT proxy on a synthesis folder: LoRA-tune the student, score base and tuned on the world's dev.

    The result is what OUT/proxy.json holds; it also reads as that dict (`result["score"]`)."""
    from dataclasses import replace

    from evals.proxy import ProxySettings, run_proxy_in

    changes = {
        "steps": steps,
        "dev_limit": dev_limit,
        "score_metric": score_metric,
        "repeats": repeats,
        "generate": generate,
    }
    with Workspace(settings or load_settings()) as workspace:
        return run_proxy_in(
            workspace,
            Path(data),
            Path(out),
            student=student,
            settings=replace(ProxySettings(), **{k: v for k, v in changes.items() if v is not None}),
        )


def run_study(
    name: str,
    trials: int,
    *,
    settings: Settings | None = None,
    storage: str | None = None,
    prompt_budget: int = 0,
    progress: bool = False,
    **options,
):
    """Run or resume a recipe-optimization study (see `optimizers.study`); returns the Optuna study.

    `options` are `StudySettings` fields; those left out keep the values the study was
    created with, and changing how trials are scored (or the world) is refused. One
    workspace, so one LLM session, serves the whole study.

    With `prompt_budget`, GEPA first rewrites the challenger's instructions (that many
    inner-loop runs), so trials choosing the "latest" prompt use its result.
    """
    from optimizers.study import run_study as _run_study
    from optimizers.study import settings_for

    settings = settings or load_settings()
    storage = storage or settings.effective_optuna_storage
    with Workspace(settings, prepare_demo=True, show_progress=progress) as workspace:  # trials' synthesis bars
        # a clear error now if options clash with the study's, or the world is not the study's
        study = settings_for(name, storage, {**options, "world": workspace.world.fingerprint})
        if prompt_budget:
            _optimize_prompt_in(workspace, "challenger", budget=prompt_budget)
        import optuna

        verbosity = optuna.logging.get_verbosity()
        if progress:  # the study's own lines say what Optuna's long INFO lines would; its warnings stay
            optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            return _run_study(name, trials, workspace=workspace, study=study, storage=storage, progress=progress)
        finally:
            optuna.logging.set_verbosity(verbosity)


def optimize_prompt(
    role: str,
    *,
    seeds: Path | None = None,
    data: Path | None = None,
    budget: int | None = None,
    train_size: int | None = None,
    val_size: int | None = None,
    holdout: int | None = None,
    settings: Settings | None = None,
) -> dict:
    """GEPA on `role`'s instructions; registers its best as a new prompt version when it beats the
    start on `holdout` cases GEPA never saw (see `optimizers.prompts`). The challenger learns
    from the inner loop on `seeds` (default: the world's train split); the verifier's judge
    from the accepted items of the finished synthesis folder `data`."""
    with Workspace(settings or load_settings(), prepare_demo=seeds is None and role == "challenger") as workspace:
        return _optimize_prompt_in(
            workspace,
            role,
            seeds=seeds,
            data=data,
            budget=budget,
            train_size=train_size,
            val_size=val_size,
            holdout=holdout,
        )


def _optimize_prompt_in(
    workspace: Workspace,
    role: str,
    *,
    seeds: Path | None = None,
    data: Path | None = None,
    budget: int | None = None,
    train_size: int | None = None,
    val_size: int | None = None,
    holdout: int | None = None,
) -> dict:
    from dataclasses import replace

    from autodata._io import read_jsonl
    from autodata.seeds import count_seeds, iter_seeds
    from optimizers.prompts import PromptOptimization
    from optimizers.prompts import optimize_prompt as _optimize_prompt

    sizes = {"budget": budget, "train_size": train_size, "val_size": val_size, "holdout": holdout}
    changes = {k: v for k, v in sizes.items() if v is not None}
    options = replace(PromptOptimization(), **changes)
    common = {"settings": workspace.settings, "llms": workspace.llms, "options": options}
    if role == "verifier":
        if data is None or not (Path(data) / "trajectories.jsonl").is_file():
            raise AutodataError(
                f"The verifier learns from a synthesis run's accepted items: pass --data with a "
                f"synthesis folder (holding trajectories.jsonl){f', not {data}' if data else ''}."
            )
        return _optimize_prompt(role, items=read_jsonl(Path(data) / "trajectories.jsonl"), **common)
    seeds = Path(seeds) if seeds else workspace.world.split_path("train")
    count_seeds(seeds)  # every record checked (file, line) before the first LLM call; then streamed
    return _optimize_prompt(role, seeds=iter_seeds(seeds), retriever=workspace.retriever, **common)


def study_rows(
    name: str, *, settings: Settings | None = None, storage: str | None = None
) -> tuple[list[TrialRow], TrialRow | None]:
    """Study `name`'s trials, one `TrialRow` each, and the best one (None before a trial completes)."""
    from optimizers.study import study_table

    settings = settings or load_settings()
    return study_table(name, storage or settings.effective_optuna_storage)


def promote(
    name: str,
    *,
    trial: int | None = None,
    rollback: bool = False,
    force: bool = False,
    dry_run: bool = False,
    settings: Settings | None = None,
    storage: str | None = None,
    scorer=None,
) -> str:
    """Move `production` to a study trial's recipe and prompts (best by default), or back.

    The trial is promoted only when its data beats production's on the world's confirm split
    (see `optimizers.promotion`); otherwise `PromotionRefused` says both scores and the interval.
    `force` promotes without measuring, and the registered version records that. `scorer`
    replaces the study's proxy on the confirm split (tests, custom scoring). `dry_run`: decide and
    say so, but register nothing.
    """
    import mlflow

    from optimizers import tracking
    from optimizers.promotion import promotion_gate

    settings = settings or load_settings()
    storage = storage or settings.effective_optuna_storage
    tracking.setup(settings)
    if rollback:
        current, previous = tracking.rollback()
        return f"Rolled back autodata-recipe production from version {current} to version {previous}."
    rows, best = study_rows(name, settings=settings, storage=storage)
    chosen = best if trial is None else next((r for r in rows if r.trial == trial), None)
    if chosen is None or chosen.state != "COMPLETE":
        raise AutodataError(f"Study {name!r} has no complete trial {trial if trial is not None else ''} to promote.")
    tags, evidence = promotion_gate(name, chosen, force=force, settings=settings, storage=storage, scorer=scorer)
    if dry_run:
        return f"Trial {chosen.trial} (recipe {chosen.recipe_hash}) would be promoted. {evidence}"
    params = mlflow.get_run(chosen.mlflow_run_id).data.params
    versions = {role: int(params[f"prompt.{role}"].rsplit("/", 1)[-1]) for role in tracking.OPTIMIZABLE_PROMPTS}
    version, previous = tracking.promote(chosen.mlflow_run_id, versions, tags=tags)
    return (
        f"Promoted trial {chosen.trial} (recipe {chosen.recipe_hash}) as autodata-recipe version {version}"
        f"{f', replacing version {previous}' if previous else ''}; prompts at production: {versions}. {evidence}"
    )


def study_data(name: str, *, trial: int = 0, settings: Settings | None = None) -> Path:
    """The ShareGPT file of a study trial's data (trial 0: the default recipe's)."""
    from optimizers.study import runs_dir

    settings = settings or load_settings()
    recipe_hash = Recipe().content_hash if trial == 0 else study_rows(name, settings=settings)[0][trial].recipe_hash
    return runs_dir(settings, name) / recipe_hash / "sft_dataset.json"
