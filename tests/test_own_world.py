"""A team's own world: `autodata world create`, and every command working in it (scripted endpoint)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from autodata.cli import main
from autodata.errors import SearchUnavailable, SeedDataError, WorldError
from autodata.search import BM25Index, SearchClient
from autodata.search.server import free_port
from autodata.settings import load_settings
from autodata.workspace import Workspace
from autodata.world import CONFIRM_SEED, World, create_world
from optimizers import tracking
from optimizers.study import BASELINE_PARAMS, StudySettings, run_study, suggest_recipe
from tests.conftest import FACTS, acceptance_scorer, write_corpus

REPO = Path(__file__).resolve().parents[1]

# Only the passages these questions need: a search of the demo or test index would find others.
OWN_FACTS = [f for f in FACTS if f[0] in ("Hamlet", "Penicillin", "Leonardo da Vinci", "Tokyo", "Apollo 11", "Sahara")]
TRAIN = [
    {"id": "own-1", "question": "who wrote the tragedy hamlet", "golden_answers": ["William Shakespeare"]},
    {"id": "own-2", "question": "who discovered penicillin", "golden_answers": ["Alexander Fleming"]},
    {"id": "own-3", "question": "who painted the mona lisa", "golden_answers": ["Leonardo da Vinci"]},
    {
        "id": "own-4",
        "question": "who wrote the tragedy hamlet?",
        "golden_answers": ["Shakespeare"],
    },  # near dup of own-1
    {
        "id": "own-5",
        "question": "which city is the capital of japan in asia",
        "golden_answers": ["Tokyo"],
    },  # 5-grams ~ dev
]
DEV = [
    {"id": "dev-1", "question": "which city is the capital of japan", "golden_answers": ["Tokyo"]},
    {"id": "dev-2", "question": "who landed on the moon in 1969", "golden_answers": ["Neil Armstrong"]},
]
TEST = [{"id": "test-1", "question": "which is the largest hot desert"}]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def own_files(tmp_path):
    return {
        "train": write_jsonl(tmp_path / "train.jsonl", TRAIN),
        "dev": write_jsonl(tmp_path / "dev.jsonl", DEV),
        "test": write_jsonl(tmp_path / "test.jsonl", TEST),
        "corpus": write_corpus(tmp_path / "corpus.jsonl", OWN_FACTS),
    }


@pytest.fixture
def own_world(tmp_path, own_files, monkeypatch, scripted_roles) -> World:
    """The own world, made through the CLI, with scripted roles and no other retriever configured."""
    out = tmp_path / "worlds" / "mine"
    assert (
        main(
            [
                "world",
                "create",
                str(out),
                "--train",
                str(own_files["train"]),
                "--dev",
                str(own_files["dev"]),
                "--test",
                str(own_files["test"]),
                "--corpus",
                str(own_files["corpus"]),
                "--name",
                "mine",
            ]
        )
        == 0
    )
    monkeypatch.setenv("AUTODATA_WORLD", str(out))
    (tmp_path / "home").mkdir(exist_ok=True)
    return World.open(out)


def test_world_create_cleans_splits_and_describes_them(own_world, own_files):
    m = own_world.manifest
    assert m["name"] == "mine" and m["kind"] == "user" and m["retriever"] == {"index": "index"}
    assert {s["split"]: s["records"] for s in m["sources"]} == {"train": 5, "dev": 2, "test": 1}
    assert all(len(s["sha256"]) == 64 for s in m["sources"]) and m["corpus"]["documents"] == len(OWN_FACTS)
    dropped = m["seeds"]["dropped"]
    assert dropped["train"]["near_duplicate"] == {"count": 1, "ids": ["own-4"]}
    assert dropped["train"]["overlaps_dev_or_confirm_or_test"] == {"count": 1, "ids": ["own-5"]}
    assert m["seeds"]["splits"] == {"train": 3, "dev": 1, "confirm": 1, "test": 1}  # half of dev carved into confirm
    assert m["confirm"] == {"source": "carved from dev", "seed": CONFIRM_SEED, "size": 1}
    assert [i.id for i in own_world.items("train")] == ["own-1", "own-2", "own-3"]
    assert own_world.items("test")[0].golden_answers is None
    # The world's own index is what commands search.
    assert len(BM25Index.load(own_world.index_dir)) == len(OWN_FACTS)
    with Workspace(load_settings()) as ws:
        assert ws.retriever.search(["mona lisa"], topk=1)[0][0].title == '"Leonardo da Vinci"'
    # Same inputs: nothing to do; other inputs: refused without --force.
    again = create_world(
        own_world.dir,
        train=own_files["train"],
        dev=own_files["dev"],
        test=own_files["test"],
        corpus=own_files["corpus"],
        name="mine",
        show_progress=False,
    )
    assert not again.created
    with pytest.raises(WorldError, match="--force"):
        create_world(own_world.dir, train=own_files["train"], dev=own_files["dev"], corpus=own_files["corpus"])


# --- the confirm split ---------------------------------------------------------------------

MANY_DEV = [
    {"id": f"d{i}", "question": q, "golden_answers": [a]}
    for i, (q, a) in enumerate(
        [
            ("who wrote the tragedy hamlet", "William Shakespeare"),
            ("what is the capital of france", "Paris"),
            ("which mountain is the highest on earth", "Mount Everest"),
            ("who discovered penicillin", "Alexander Fleming"),
            ("who painted the mona lisa", "Leonardo da Vinci"),
            ("what is the capital of japan", "Tokyo"),
            ("which mission first landed people on the moon", "Apollo 11"),
            ("what is the largest hot desert", "Sahara"),
            ("in which country is hamlet set", "Denmark"),
            ("which river flows through paris", "Seine"),
        ]
    )
]
FAR_TRAIN = [{"id": "far-1", "question": "how many legs does a spider have", "golden_answers": ["eight"]}]


def test_confirm_is_carved_from_dev_deterministically(tmp_path, own_files, capsys):
    dev = write_jsonl(tmp_path / "many_dev.jsonl", MANY_DEV)
    train = write_jsonl(tmp_path / "far_train.jsonl", FAR_TRAIN)

    def make(name: str, *extra: str) -> World:
        assert (
            main(
                [
                    "world",
                    "create",
                    str(tmp_path / name),
                    "--train",
                    str(train),
                    "--dev",
                    str(dev),
                    "--corpus",
                    str(own_files["corpus"]),
                    *extra,
                ]
            )
            == 0
        )
        return World.open(tmp_path / name)

    world = make("a", "--confirm-size", "3")
    assert "confirm 3" in capsys.readouterr().out
    dev_ids, confirm_ids = [i.id for i in world.items("dev")], [i.id for i in world.items("confirm")]
    assert len(dev_ids) == 7 and len(confirm_ids) == 3 and not set(dev_ids) & set(confirm_ids)
    assert sorted(dev_ids + confirm_ids) == sorted(r["id"] for r in MANY_DEV)
    assert world.manifest["confirm"] == {"source": "carved from dev", "size": 3, "seed": CONFIRM_SEED}
    assert world.manifest["seeds"]["splits"] == {"train": 1, "dev": 7, "confirm": 3}
    assert "confirm.json" in world.manifest["files"]
    again = make("b", "--confirm-size", "3")
    assert [i.id for i in again.items("confirm")] == confirm_ids and again.fingerprint == world.fingerprint
    default = make("c")  # 200 asked, at most half of dev carved
    assert default.manifest["seeds"]["splits"]["confirm"] == 5 and default.fingerprint != world.fingerprint


def test_a_given_confirm_file_is_cleaned_like_dev(tmp_path, own_files):
    confirm = write_jsonl(
        tmp_path / "confirm.jsonl",
        [
            {"id": "c-1", "question": "who painted the mona lisa in florence italy", "golden_answers": ["Leonardo"]},
            {"id": "c-2", "question": "which city is the capital of japan since 1869", "golden_answers": ["Tokyo"]},
            {"id": "c-3", "question": "which is the largest hot desert on earth", "golden_answers": ["Sahara"]},
        ],
    )
    train = write_jsonl(
        tmp_path / "train6.jsonl",
        TRAIN
        + [
            {"id": "own-6", "question": "tell me who painted the mona lisa in florence", "golden_answers": ["Leonardo"]}
        ],
    )
    manifest = create_world(
        tmp_path / "w",
        train=train,
        dev=own_files["dev"],
        confirm=confirm,
        corpus=own_files["corpus"],
        show_progress=False,
    ).manifest
    dropped = manifest["seeds"]["dropped"]
    assert dropped["confirm"]["overlaps_dev"] == {"count": 1, "ids": ["c-2"]}  # dev wins over confirm
    assert dropped["train"]["overlaps_dev_or_confirm"] == {"count": 2, "ids": ["own-5", "own-6"]}  # own-6 ~ c-1
    assert manifest["seeds"]["splits"] == {"train": 3, "dev": 2, "confirm": 2}
    assert manifest["confirm"] == {"source": str(confirm.resolve()), "seed": None, "size": 2}
    assert {s["split"] for s in manifest["sources"]} == {"train", "dev", "confirm"}
    world = World.open(tmp_path / "w")
    assert [i.id for i in world.items("dev")] == ["dev-1", "dev-2"]  # nothing carved
    assert [i.id for i in world.items("confirm")] == ["c-1", "c-3"]
    with pytest.raises(SeedDataError, match="line 1: missing 'golden_answers'"):  # confirm must carry answers
        create_world(
            tmp_path / "x",
            train=own_files["train"],
            dev=own_files["dev"],
            confirm=own_files["test"],
            corpus=own_files["corpus"],
        )


def test_a_world_without_confirm_says_how_to_get_one(own_world, tmp_path, own_files):
    (own_world.dir / "confirm.json").unlink()  # a world made before confirm splits existed
    manifest = {k: v for k, v in own_world.manifest.items() if k != "confirm"}
    (own_world.dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WorldError) as err:
        World.open(own_world.dir).items("confirm")
    message = str(err.value)
    assert "\n" not in message and "autodata world create" in message and "--force" in message
    assert "autodata world prepare --force" in message
    one_dev = write_jsonl(tmp_path / "one_dev.jsonl", DEV[:1])
    small = create_world(
        tmp_path / "small", train=own_files["train"], dev=one_dev, corpus=own_files["corpus"], show_progress=False
    )
    assert "confirm.json" not in small.manifest["files"] and small.manifest["confirm"]["size"] == 0
    with pytest.raises(WorldError, match="none was carved from dev .* --confirm FILE --force"):
        World.open(small.world_dir).items("confirm")


def test_held_out_includes_confirm(own_world):
    confirm_ids = {i.id for i in own_world.items("confirm")}
    assert confirm_ids and confirm_ids <= {i.id for i in own_world.held_out()}
    assert {i.id for i in own_world.held_out()} == {"dev-1", "dev-2", "test-1"}


def test_bad_inputs_name_file_and_line_and_write_nothing(tmp_path, own_files, capsys):
    bad = write_jsonl(tmp_path / "bad.jsonl", [TRAIN[0], {"id": "x", "golden_answers": ["a"]}])
    out = tmp_path / "w"
    assert (
        main(
            [
                "world",
                "create",
                str(out),
                "--train",
                str(bad),
                "--dev",
                str(own_files["dev"]),
                "--corpus",
                str(own_files["corpus"]),
            ]
        )
        == 1
    )
    assert f"{bad}: 1 bad record(s): line 2: missing 'question'" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".w.building-*"))
    with pytest.raises(SeedDataError, match="line 1: missing 'golden_answers'"):  # dev must carry answers
        create_world(out, train=own_files["train"], dev=own_files["test"], corpus=own_files["corpus"])
    with pytest.raises(WorldError, match="exactly one of --corpus"):
        create_world(out, train=own_files["train"], dev=own_files["dev"])
    with pytest.raises(SearchUnavailable, match=f"127.0.0.1:{(port := free_port())}"):
        create_world(out, train=own_files["train"], dev=own_files["dev"], retriever_url=f"http://127.0.0.1:{port}")
    assert not out.exists()
    # argparse itself refuses both at once
    with pytest.raises(SystemExit):
        main(["world", "create", str(out), "--train", "a", "--dev", "b", "--corpus", "c", "--retriever-url", "d"])


def test_a_world_on_a_retriever_url_searches_that_server(tmp_path, own_files, retriever_server, monkeypatch):
    url = f"{retriever_server.url}/retrieve"
    world = create_world(tmp_path / "remote", train=own_files["train"], dev=own_files["dev"], retriever_url=url)
    assert world.manifest["retriever"] == {"url": url} and not (world.world_dir / "index").exists()
    monkeypatch.setenv("AUTODATA_WORLD", str(world.world_dir))
    with Workspace(load_settings()) as ws:
        assert isinstance(ws.retriever, SearchClient) and ws.retriever.url == url
        assert sorted(i.id for i in ws.world.held_out()) == ["dev-1", "dev-2"]  # no test split: dev and confirm


def test_study_eval_and_synthesis_read_only_the_worlds_files(own_world, tmp_path, capsys):
    train_ids = {i.id for i in own_world.items("train")}
    with Workspace(load_settings()) as ws:
        study = run_study(
            "own",
            1,
            workspace=ws,
            scorer=acceptance_scorer,
            study=StudySettings(seeds_per_trial=5, stages=(1.0,), rewrite_prompts=False),
        )
        trial = study.trials[0]
        assert trial.state.name == "COMPLETE" and trial.user_attrs["accepted_items"] >= 1
        run_dir = Path(ws.settings.home_dir) / "studies" / "own" / "runs" / trial.user_attrs["recipe_hash"]
        done = {json.loads(line)["seed_id"] for line in (run_dir / "progress.jsonl").read_text().splitlines()}
        assert done == train_ids  # the world's train split, cleaned: not own-4 or own-5
        assert (
            json.loads((run_dir / "manifest.json").read_text())["quality_gates"]["contamination_checked_against"] == 3
        )
        assert study.user_attrs["autodata.settings"]["world"] == own_world.fingerprint

    # A study is tied to its world: another world is refused in one line.
    other = create_world(
        tmp_path / "other",
        train=write_jsonl(tmp_path / "t2.jsonl", TRAIN[:3]),
        dev=write_jsonl(tmp_path / "d2.jsonl", DEV[1:]),
        corpus=tmp_path / "corpus.jsonl",
    )
    assert main(["study", "run", "own", "--trials", "2", "--world", str(other.world_dir)]) == 1
    assert "pass the --world it was created with" in capsys.readouterr().err


def test_seeds_overlapping_the_worlds_dev_set_are_reported_and_skipped(own_world, tmp_path, capsys):
    seeds = write_jsonl(tmp_path / "mine.jsonl", [TRAIN[1], {**DEV[0], "id": "copied-dev"}])
    recipe = tmp_path / "keep.yaml"
    recipe.write_text("strategies:\n  keep: 1\n  rephrase: 0\n  multi_hop: 0\n")
    out = tmp_path / "run"
    assert main(["synthesize", "--seeds", str(seeds), "--recipe", str(recipe), "--out", str(out)]) == 0
    assert "contaminated_seed 1" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seeds"]["contaminated_skipped"] == 1 and manifest["rejections"]["contaminated_seed"] == 1
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert rejected == [{**rejected[0], "seed_id": "copied-dev", "reason": "contaminated_seed"}]
    assert "dev-1" in rejected[0]["detail"]
    assert [json.loads(line)["seed_id"] for line in (out / "trajectories.jsonl").read_text().splitlines()] == ["own-2"]


def test_trials_with_equal_recipes_share_one_folder(own_world):
    settings = load_settings()
    queued = optuna.create_study(study_name="twins", storage=settings.effective_optuna_storage, direction="maximize")
    queued.enqueue_trial(BASELINE_PARAMS)
    queued.enqueue_trial(BASELINE_PARAMS)
    with Workspace(settings) as ws:
        study = run_study(
            "twins",
            2,
            workspace=ws,
            scorer=acceptance_scorer,
            study=StudySettings(seeds_per_trial=3, stages=(1.0,), rewrite_prompts=False),
        )
    first, second = study.trials
    assert first.user_attrs["recipe_hash"] == second.user_attrs["recipe_hash"]
    assert first.user_attrs["seeds_resumed"] == 0 and second.user_attrs["seeds_resumed"] == 3  # nothing made twice
    assert [p.name for p in (settings.home_dir / "studies" / "twins" / "runs").iterdir()] == [
        first.user_attrs["recipe_hash"]
    ]


def test_a_killed_trials_retry_resumes_its_folder(own_world):
    """The dead trial synthesized 1 of 3 seeds before its process died; the retry continues from there."""
    import time

    settings = load_settings()
    options = StudySettings(
        seeds_per_trial=3, stages=(1.0,), heartbeat_interval=1, grace_period=2, rewrite_prompts=False
    )
    storage = optuna.storages.RDBStorage(settings.effective_optuna_storage, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="crash", storage=storage, direction="maximize")
    study.enqueue_trial({**BASELINE_PARAMS, "max_rounds": 2})
    dead = study.ask()  # what a process killed mid-trial leaves behind: RUNNING, params chosen, no heartbeat
    tracking.setup(settings)
    tracking.ensure_seed_prompts()
    recipe, _ = suggest_recipe(dead, {role: 1 for role in tracking.OPTIMIZABLE_PROMPTS})
    run_dir = settings.home_dir / "studies" / "crash" / "runs" / recipe.content_hash
    with Workspace(settings) as ws:
        ws.synthesize(run_dir, recipe=recipe, limit=1, show_progress=False)
    storage.record_heartbeat(dead._trial_id)
    time.sleep(3)
    with Workspace(settings) as ws:
        study = run_study("crash", 1, workspace=ws, scorer=acceptance_scorer, study=options)
    retried = [t for t in study.trials if t.number != dead.number]
    assert study.trials[dead.number].state.name == "FAIL"
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE" and retried[0].params == dead.params
    assert retried[0].user_attrs["recipe_hash"] == recipe.content_hash and retried[0].user_attrs["seeds_resumed"] == 1
    assert len((run_dir / "progress.jsonl").read_text().splitlines()) == 3  # each seed once


def test_commands_take_world_from_flag_env_and_config(own_world, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("AUTODATA_WORLD")
    assert main(["search", "--world", str(own_world.dir), "mona lisa", "--topk", "1"]) == 0
    assert "Leonardo da Vinci" in capsys.readouterr().out
    config = tmp_path / "autodata.toml"
    config.write_text(f'world = "{own_world.dir}"\n')
    assert main(["--config", str(config), "config", "show"]) == 0
    assert json.loads(capsys.readouterr().out)["world"] == str(own_world.dir)
    assert main(["--config", str(config), "data", "check", str(own_world.dir / "train.json")]) == 0  # vs dev+test
    report = json.loads(capsys.readouterr().out)
    assert [Path(c["against"]).name for c in report["contamination"]] == ["dev.json", "test.json", "confirm.json"]
    dirty = write_jsonl(tmp_path / "dirty.jsonl", [{**DEV[0], "id": "z"}])  # dev-1 stays in dev
    assert main(["--config", str(config), "data", "check", str(dirty)]) == 1
    assert main(["search", "--world", str(tmp_path / "nowhere"), "x"]) == 1
    assert "is not a world (no manifest.json)" in capsys.readouterr().err


def test_no_import_cycles_and_the_core_stays_below():
    modules = [
        "autodata",
        "autodata.api",
        "autodata.cli",
        "autodata.workspace",
        "autodata.world",
        "autodata.synthesis",
        "autodata.pipeline",
        "evals",
        "evals.metrics",
        "evals.proxy",
        "evals.evaluate",
        "evals.recipe_score",
        "optimizers",
        "optimizers.study",
        "optimizers.prompts",
        "optimizers.tracking",
        "prompts",
        "autodata.service",
        "autodata.workqueue",
    ]
    for module in modules:  # each alone, in a fresh interpreter: a cycle shows as an ImportError
        done = subprocess.run(
            [sys.executable, "-c", f"import {module}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            env={"LITELLM_LOCAL_MODEL_COST_MAP": "true", "PATH": "/usr/bin:/bin"},
        )
        assert done.returncode == 0, f"import {module}: {done.stderr[-500:]}"
    top = {"autodata/api.py", "autodata/cli.py", "autodata/service.py"}  # the layers that convert input and output
    for path in sorted((REPO / "autodata").rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
        if relative not in top:
            assert not {m for m in imported if m.split(".")[0] in ("optimizers", "evals")}, relative
            assert "autodata.api" not in imported, relative
    for path in sorted((REPO / "optimizers").rglob("*.py")) + sorted((REPO / "evals").rglob("*.py")):
        assert "autodata.api" not in path.read_text(encoding="utf-8"), path
