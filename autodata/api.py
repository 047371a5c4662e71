"""The library API. The CLI (and any service) only converts input and output around it."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from autodata.errors import AutodataError, CorpusError
from autodata.llm import Budget, LLMSession
from autodata.recipe import Recipe, load_recipe
from autodata.synthesis import SynthesisReport
from autodata.synthesis import synthesize as run_synthesis
from autodata.search import BM25Index, Hit, Retriever, open_retriever
from autodata.seeds import find_contamination, find_near_duplicates, load_seeds
from autodata.settings import ROLE_NAMES, RoleName, Settings, load_settings
from autodata.world import WorldPlan, WorldResult, world_split_path
from autodata.world import prepare_world as _prepare_world
from evals.metrics import sub_exact_match
from evals.scoring import score_predictions_file

logger = logging.getLogger(__name__)


def prepare_world(settings: Settings | None = None, *, force: bool = False, show_progress: bool = True,
                  plan: WorldPlan = WorldPlan()) -> WorldResult:  # fmt: skip
    """Fetch and build the demo world (corpus, seed splits, BM25 index) under the home folder.

    Example:
        >>> result = prepare_world()  # doctest: +SKIP
        >>> result.manifest["seeds"]["splits"]  # doctest: +SKIP
        {'train': 1742, 'dev': 500, 'test': 500}
    """
    settings = settings or load_settings()
    return _prepare_world(settings.world_dir, settings.cache_dir / "packages", plan, force=force,
                          show_progress=show_progress)  # fmt: skip


def build_index(corpus: Path, out: Path, *, force: bool = False, show_progress: bool = True) -> tuple[BM25Index, bool]:
    """Build a BM25 index of a Search-R1 corpus file; returns (index, whether it was built).

    An index already built from the same corpus bytes is reused unless `force`.
    """
    out = Path(out)
    if not force and out.exists():
        try:
            existing = BM25Index.load(out)
            if existing.is_built_from(corpus):
                return existing, False
        except CorpusError:
            pass  # not an index of ours, or damaged: rebuild it
    return BM25Index.build(corpus, out, show_progress=show_progress), True


def retriever(settings: Settings | None = None) -> Retriever:
    """The configured retriever: the server at `retriever.url`, else the local index."""
    return open_retriever(settings or load_settings())


def search(queries: Sequence[str], *, topk: int = 3, settings: Settings | None = None) -> list[list[Hit]]:
    """Search the configured retriever.

    Example:
        >>> search(["who wrote hamlet"], topk=1)[0][0].title  # doctest: +SKIP
        '"Hamlet"'
    """
    return retriever(settings).search(list(queries), topk=topk)


def serve_retriever(index_dir: Path, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve an index with the Search-R1 `/retrieve` API until interrupted."""
    import uvicorn

    from autodata.search.server import create_app

    index = BM25Index.load(index_dir)
    uvicorn.run(create_app(index, documents=len(index)), host=host, port=port, log_level="warning")


def check_data(path: Path, against: Sequence[Path] = (), *, near_duplicate_threshold: float = 0.8,
               ngram: int = 5, min_overlap: float = 0.5) -> dict:  # fmt: skip
    """Near duplicates inside a seed file and its contamination against held-out files.

    Returns a report dict; `clean` is False when anything was found.
    """
    items = load_seeds(path, require_answers=False)
    duplicates = find_near_duplicates(items, threshold=near_duplicate_threshold)
    report: dict = {
        "file": str(path),
        "records": len(items),
        "near_duplicates": {"threshold": near_duplicate_threshold, "pairs": len(duplicates),
                            "examples": [list(p) for p in duplicates[:10]]},  # fmt: skip
        "contamination": [],
    }
    for other in against:
        found = find_contamination(items, load_seeds(other, require_answers=False), n=ngram, min_overlap=min_overlap)
        report["contamination"].append(
            {"against": str(other), "ngram": ngram, "min_overlap": min_overlap, "contaminated": len(found),
             "examples": found[:10]}  # fmt: skip
        )
    report["clean"] = not duplicates and not any(c["contaminated"] for c in report["contamination"])
    return report


def score(predictions: Path, answers: Path, *, regex: bool = False) -> dict:
    """EM, SubEM and F1 of a predictions file against a FlashRAG answer file."""
    return score_predictions_file(predictions, answers, regex=regex)


def demo_searches(settings: Settings | None = None, *, questions: int = 5, topk: int = 3) -> list[dict]:
    """Search the first dev questions of the demo world; report whether an answer came back."""
    settings = settings or load_settings()
    items = load_seeds(world_split_path(settings.world_dir, "dev"))[:questions]
    results = search([item.question for item in items], topk=topk, settings=settings)
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


def synthesize(out: Path, *, recipe: Recipe | None = None, seeds: Path | None = None, limit: int | None = None,
               concurrency: int = 1, budget: Budget = Budget(), settings: Settings | None = None,
               show_progress: bool = True, recipe_source: str = "default") -> tuple[SynthesisReport, dict]:  # fmt: skip
    """Turn seeds into verified search-augmented trajectories in `out` (resumable).

    Without `seeds`, uses the demo world's train split and gates contamination against
    its dev and test questions. Returns the report and the job's LLM usage summary.

    Example:
        >>> report, usage = synthesize(Path("runs/demo"), limit=5)  # doctest: +SKIP
        >>> report.manifest["items"]["accepted"]  # doctest: +SKIP
        3
    """
    settings = settings or load_settings()
    recipe = recipe or Recipe()
    held_out: list = []
    if seeds is None:
        seeds = world_split_path(settings.world_dir, "train")
        held_out = [item for split in ("dev", "test")
                    for item in load_seeds(world_split_path(settings.world_dir, split), require_answers=False)]  # fmt: skip
    with LLMSession(settings, budget=budget) as llms:
        report = run_synthesis(Path(seeds), Path(out), recipe=recipe, retriever=retriever(settings), llms=llms,
                               limit=limit, concurrency=concurrency, held_out=held_out, show_progress=show_progress,
                               recipe_source=recipe_source)  # fmt: skip
        return report, llms.usage.summary()


def evaluate_split(out: Path, *, split: str = "dev", limit: int | None = None, role: RoleName = "student",
                   baselines: bool = False, concurrency: int = 1, settings: Settings | None = None,
                   show_progress: bool = True) -> dict[str, dict | None]:  # fmt: skip
    """Run `role` over a demo-world split in the search-agent loop (and baselines); metrics per mode.

    Writes OUT/predictions.json, OUT/trajectories.jsonl and (dev) OUT/metrics.json; with
    `baselines`, the same under OUT/baselines/direct and OUT/baselines/naive_rag.
    """
    from evals.evaluate import LoopSettings, evaluate

    settings = settings or load_settings()
    items = load_seeds(world_split_path(settings.world_dir, split), require_answers=split != "test")
    items = items[:limit] if limit is not None else items
    search = Recipe().search
    loop = LoopSettings(top_k=search.top_k, max_turns=search.max_turns, max_observation_words=search.max_observation_tokens)
    modes = {"search_agent": Path(out)}
    if baselines:
        modes |= {"direct": Path(out) / "baselines" / "direct", "naive_rag": Path(out) / "baselines" / "naive_rag"}
    results = {}
    with LLMSession(settings) as llms:
        client, search_with = llms.client(role), retriever(settings)
        for mode, folder in modes.items():
            results[mode] = evaluate(items, folder, client=client, retriever=search_with, loop=loop, mode=mode,
                                     concurrency=concurrency, show_progress=show_progress)  # fmt: skip
    return results


def export_llamafactory(data_dir: Path, *, model: str = "Qwen/Qwen2.5-7B-Instruct",
                        output_dir: str = "saves/qwen2_5-7b-instruct/full/search_sft") -> Path:  # fmt: skip
    """Write the LLaMA-Factory training YAML next to a synthesis run's ShareGPT data.

    Checks that `data_dir` holds a non-empty `sft_dataset.json` that LLaMA-Factory would
    accept whole; returns the YAML path (train with `llamafactory-cli train YAML`).
    """
    import json

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
    atomic_write_text(config_path, yaml.safe_dump(llamafactory_config(data_dir, model=model, output_dir=output_dir),
                                                  sort_keys=False))  # fmt: skip
    return config_path


def run_proxy(data: Path, out: Path, *, student: Path | None = None, steps: int | None = None,
              dev_limit: int | None = None, score_metric: str | None = None,
              settings: Settings | None = None) -> dict:  # fmt: skip
    """The quick SFT proxy on a synthesis folder: LoRA-tune the student, score base and tuned on dev."""
    from dataclasses import replace

    from autodata.llm.embedded import locate_gguf
    from evals.proxy import ProxySettings, load_examples
    from evals.proxy import run_proxy as _run_proxy

    settings = settings or load_settings()
    load_examples(data)  # a clear error before anything else starts
    proxy = ProxySettings()
    changes = {k: v for k, v in {"steps": steps, "dev_limit": dev_limit, "score_metric": score_metric}.items() if v}
    proxy = replace(proxy, **changes)
    dev = load_seeds(world_split_path(settings.world_dir, "dev"))
    return _run_proxy(Path(data), Path(out), dev_items=dev, retriever=retriever(settings), cache_dir=settings.cache_dir,
                      embedded_gguf=locate_gguf(settings.embedded, settings.cache_dir), student=student,
                      settings=proxy)  # fmt: skip


def run_study(name: str, trials: int, *, settings: Settings | None = None, storage: str | None = None,
              prompt_budget: int = 0, **options):  # fmt: skip
    """Run or resume a recipe-optimization study (see `optimizers.study`); returns the Optuna study.

    `options` are `StudySettings` fields; those left out keep the values the study was
    created with, and changing how trials are scored is refused.

    With `prompt_budget`, GEPA first rewrites the challenger's instructions (that many
    inner-loop runs), so trials choosing the "latest" prompt use its result.
    """
    from optimizers.study import run_study as _run_study
    from optimizers.study import settings_for

    settings = settings or load_settings()
    storage = storage or settings.effective_optuna_storage
    study = settings_for(name, storage, options)  # a clear error now if options clash with the study's
    prepare_world(settings, show_progress=False)
    if prompt_budget:
        optimize_prompt("challenger", budget=prompt_budget, settings=settings)
    return _run_study(name, trials, settings=settings, study=study, storage=storage)


def optimize_prompt(role: str, *, seeds: Path | None = None, data: Path | None = None, budget: int | None = None,
                    train_size: int | None = None, val_size: int | None = None,
                    settings: Settings | None = None) -> dict:  # fmt: skip
    """GEPA on `role`'s instructions; registers an improvement as a new prompt version (see
    `optimizers.prompts`). The challenger learns from the inner loop on `seeds` (default: the
    demo world's train split); the verifier's judge from the accepted items of the finished
    synthesis folder `data`."""
    import json
    from dataclasses import replace

    from optimizers.prompts import PromptOptimization
    from optimizers.prompts import optimize_prompt as _optimize_prompt

    settings = settings or load_settings()
    changes = {k: v for k, v in {"budget": budget, "train_size": train_size, "val_size": val_size}.items() if v}
    options = replace(PromptOptimization(), **changes)
    if role == "verifier":
        if data is None or not (Path(data) / "trajectories.jsonl").is_file():
            raise AutodataError(f"The verifier learns from a synthesis run's accepted items: pass --data with a "
                                f"synthesis folder (holding trajectories.jsonl){f', not {data}' if data else ''}.")  # fmt: skip
        lines = (Path(data) / "trajectories.jsonl").read_text(encoding="utf-8").splitlines()
        return _optimize_prompt(role, items=[json.loads(line) for line in lines], settings=settings, options=options)
    if seeds is None:
        prepare_world(settings, show_progress=False)
        seeds = world_split_path(settings.world_dir, "train")
    return _optimize_prompt(role, seeds=load_seeds(Path(seeds)), retriever=retriever(settings), settings=settings,
                            options=options)  # fmt: skip


def show_study(name: str, *, settings: Settings | None = None, storage: str | None = None):
    from optimizers.study import study_table

    settings = settings or load_settings()
    return study_table(name, storage or settings.effective_optuna_storage)


def promote(name: str, *, trial: int | None = None, rollback: bool = False, settings: Settings | None = None,
            storage: str | None = None) -> str:  # fmt: skip
    """Move `production` to a study trial's recipe and prompts (best by default), or back."""
    import mlflow

    from optimizers import tracking

    settings = settings or load_settings()
    tracking.setup(settings)
    if rollback:
        current, previous = tracking.rollback()
        return f"Rolled back autodata-recipe production from version {current} to version {previous}."
    rows, best = show_study(name, settings=settings, storage=storage)
    chosen = best if trial is None else next((r for r in rows if r["trial"] == trial), None)
    if chosen is None or chosen["state"] != "COMPLETE":
        raise AutodataError(f"Study {name!r} has no complete trial {trial if trial is not None else ''} to promote.")
    params = mlflow.get_run(chosen["mlflow_run_id"]).data.params
    versions = {role: int(params[f"prompt.{role}"].rsplit("/", 1)[-1]) for role in tracking.OPTIMIZABLE_PROMPTS}
    version, previous = tracking.promote(chosen["mlflow_run_id"], versions)
    return (f"Promoted trial {chosen['trial']} (recipe {chosen['recipe_hash']}) as autodata-recipe version {version}"
            f"{f', replacing version {previous}' if previous else ''}; prompts at production: {versions}.")
