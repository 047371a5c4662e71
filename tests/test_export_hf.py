"""`export_hf`: a finished run folder as parquet shards, a dataset card and LLaMA-Factory's entry."""

import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from autodata import export_hf as module
from autodata.errors import AutodataError
from autodata.export_hf import export_hf, size_category
from autodata.items import AcceptedItem
from autodata.trajectory import sharegpt_problems

GOLDEN = Path(__file__).parent / "fixtures" / "golden_run" / "default"
# LLaMA-Factory (src/llamafactory/extras/constants.py, read at ff6d4d12): file type by extension.
FILEEXT2TYPE = {"arrow": "arrow", "csv": "csv", "json": "json", "jsonl": "json", "parquet": "parquet", "txt": "text"}


@pytest.fixture
def run(tmp_path) -> Path:
    """A copy of the golden run with the whole manifest.json a run writes (the fixture's own is trimmed)."""
    run = tmp_path / "run"
    shutil.copytree(GOLDEN, run)
    shutil.copy(run / "run_manifest.json", run / "manifest.json")
    return run


def rows(out: Path) -> list[dict]:
    return [row for shard in sorted((out / "data").iterdir()) for row in pq.read_table(shard).to_pylist()]


def front_matter(card: str) -> tuple[dict, str]:
    empty, front, body = card.split("---\n", 2)
    assert empty == ""
    return yaml.safe_load(front), body


def test_rows_are_the_sft_examples_in_order_with_their_items(run, tmp_path):
    summary = export_hf(run, tmp_path / "hf")
    examples = json.loads((run / "sft_dataset.json").read_text(encoding="utf-8"))
    items = [json.loads(line) for line in (run / "trajectories.jsonl").read_text(encoding="utf-8").splitlines()]
    got = rows(tmp_path / "hf")
    assert [{k: r[k] for k in ("conversations", "system", "tools")} for r in got] == examples
    # the same text LLaMA-Factory reads from sft_dataset.json, byte for byte
    assert json.dumps([r["conversations"] for r in got]) == json.dumps([e["conversations"] for e in examples])
    assert [(r["id"], r["seed_id"], r["question"], r["answer"], r["hops"]) for r in got] == [
        (i["id"], i["seed_id"], i["question"], i["answer"], i["hops"]) for i in items
    ]
    assert {r["strategy"] for r in got} <= {"keep", "rephrase"} and {r["task_type"] for r in got} == {"simple_fact"}
    assert summary["rows"] == 5 and summary["shards"] == 1
    assert summary["card"] == str((tmp_path / "hf" / "README.md").resolve())
    assert summary["push_command"] == f"hf upload USER/NAME {(tmp_path / 'hf').resolve()} --repo-type dataset"
    assert not list(tmp_path.glob(".hf.building-*"))


def test_examples_dropped_from_the_datasets_do_not_shift_the_ids(run, tmp_path):
    """The datasets leave out near duplicates and contaminated items, and carry no ids."""
    examples = json.loads((run / "sft_dataset.json").read_text(encoding="utf-8"))
    (run / "sft_dataset.json").write_text(json.dumps(examples[:1] + examples[2:]), encoding="utf-8")
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    manifest["items"]["in_datasets"] = 4
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    export_hf(run, tmp_path / "hf")
    got = rows(tmp_path / "hf")
    ids = [item.id for item in AcceptedItem.read(run / "trajectories.jsonl")]
    assert len(ids) == 5 and [r["id"] for r in got] == ids[:1] + ids[2:]
    assert all(r["question"] in r["conversations"][0]["value"] for r in got)


def test_shards_hold_at_most_shard_rows_and_keep_the_order(run, tmp_path, monkeypatch):
    monkeypatch.setattr(module, "SHARD_ROWS", 2)
    summary = export_hf(run, tmp_path / "hf")
    names = sorted(p.name for p in (tmp_path / "hf" / "data").iterdir())
    assert names == [f"train-0000{i}-of-00003.parquet" for i in range(3)] and summary["shards"] == 3
    assert [pq.read_metadata(tmp_path / "hf" / "data" / n).num_rows for n in names] == [2, 2, 1]
    assert [r["id"] for r in rows(tmp_path / "hf")] == [
        item.id for item in AcceptedItem.read(run / "trajectories.jsonl")
    ]


def test_card_front_matter_is_the_hubs_metadata(run, tmp_path):
    export_hf(run, tmp_path / "hf", world_manifest={"name": "my world", "license": "cc-by-sa-4.0"})
    front, body = front_matter((tmp_path / "hf" / "README.md").read_text(encoding="utf-8"))
    assert front["license"] == "cc-by-sa-4.0"
    assert front["language"] == ["en"]
    assert front["task_categories"] == ["question-answering", "text-generation"]
    assert front["size_categories"] == ["n<1K"]
    assert {"search-augmented", "agentic", "synthetic"} <= set(front["tags"])
    assert front["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}
    ]
    assert "World: my world" in body
    export_hf(run, tmp_path / "hf2")  # no world manifest: no license to claim
    assert front_matter((tmp_path / "hf2" / "README.md").read_text(encoding="utf-8"))[0]["license"] == "other"


@pytest.mark.parametrize(
    ("rows", "bucket"),
    [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (99_999, "10K<n<100K"), (100_000, "100K<n<1M"), (10**13, "n>1T")],
)
def test_size_category_buckets(rows, bucket):
    assert size_category(rows) == bucket


def test_card_counts_are_the_manifests(run, tmp_path):
    """Numbers come from manifest.json as they are, not recounted from the JSONL files."""
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    manifest["seeds"]["total"] = 60
    manifest["items"]["rejected_candidates"] = 31
    manifest["rejections"] = {"no_evidence": 17, "invalid": 12, "too_hard": 1}
    manifest["quality_gates"]["near_duplicates_removed"] = 7
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    export_hf(run, tmp_path / "hf")
    _, body = front_matter((tmp_path / "hf" / "README.md").read_text(encoding="utf-8"))
    lines = set(body.splitlines())
    assert {"| seeds | 60 |", "| accepted items | 5 |", "| rejected (seeds and candidate questions) | 31 |"} <= lines
    assert {"| no_evidence | 17 |", "| invalid | 12 |", "| too_hard | 1 |"} <= lines
    assert "| near_duplicates_removed | 7 |" in lines
    assert manifest["recipe_hash"] in body and manifest["acceptance_rule"] in body
    assert 'load_dataset("parquet", data_files="data/train-*.parquet"' in body and '"formatting": "sharegpt"' in body


def test_dataset_info_is_what_llamafactory_loads(run, tmp_path):
    """LLaMA-Factory's loader (data/loader.py, `load_from == "file"`): `dataset_dir/file_name` may be a
    folder; every file in it is a data file, and all must have one extension it knows."""
    out = tmp_path / "hf"
    export_hf(run, out)
    info = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
    entry = info["search_sft"]
    assert entry == {
        "file_name": "data",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system", "tools": "tools"},
    }
    local_path = os.path.join(out, entry["file_name"])
    assert os.path.isdir(local_path)
    types = {FILEEXT2TYPE.get(os.path.splitext(name)[-1][1:]) for name in os.listdir(local_path)}
    assert types == {"parquet"}
    for name in os.listdir(local_path):
        table = pq.read_table(os.path.join(local_path, name))
        assert set(entry["columns"].values()) <= set(table.column_names)
        assert all(not sharegpt_problems(row) for row in table.to_pylist())  # "from"/"value", human/gpt turns


@pytest.mark.parametrize("broken", ["no manifest", "no accepted items"])
def test_an_unfinished_or_empty_run_writes_nothing(run, tmp_path, broken):
    if broken == "no manifest":
        (run / "manifest.json").unlink()
    else:  # a finished run that accepted nothing
        (run / "sft_dataset.json").write_text("[]", encoding="utf-8")
        manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
        manifest["items"].update(accepted=0, in_datasets=0)
        (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(AutodataError, match=str(run)) as err:
        export_hf(run, tmp_path / "hf")
    assert type(err.value) is AutodataError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_failure_while_writing_leaves_the_earlier_export(run, tmp_path, monkeypatch):
    out = tmp_path / "hf"
    export_hf(run, out)
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(module.pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        export_hf(run, out)
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "run"]


@pytest.mark.parametrize("target", ["run", "other"])
def test_a_folder_that_is_no_export_is_never_replaced(run, tmp_path, target):
    out = run if target == "run" else tmp_path / "other"
    if target == "other":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(AutodataError, match="pick another --out"):
        export_hf(run, out)
    assert sorted(p.name for p in out.iterdir()) == before


def test_the_cli_writes_the_dataset_and_prints_the_push_step(run, tmp_path, capsys):
    from autodata.cli import main

    assert main(["export", "hf", str(run), "--out", str(tmp_path / "hf")]) == 0
    printed = capsys.readouterr().out
    assert f"rows in 1 Parquet file(s), {tmp_path / 'hf' / 'README.md'}" in printed
    assert f"hf upload USER/NAME {tmp_path / 'hf'} --repo-type dataset" in printed
    assert len(rows(tmp_path / "hf")) == len(json.loads((run / "sft_dataset.json").read_text()))
    assert main(["export", "hf", str(tmp_path / "nowhere"), "--out", str(tmp_path / "hf2")]) == 1
    assert not (tmp_path / "hf2").exists()


def test_hugging_face_datasets_loads_the_export_as_the_card_says(run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read before `datasets` is imported: no hub, ever
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    from datasets import load_dataset

    out = tmp_path / "hf"
    export_hf(run, out)
    cache = str(tmp_path / "cache")
    by_files = load_dataset("parquet", data_files=str(out / "data" / "train-*.parquet"), split="train", cache_dir=cache)
    by_card = load_dataset(str(out), split="train", cache_dir=cache)  # the card's `configs` name the shards
    assert by_files.to_list() == by_card.to_list() == rows(out)
    examples = json.loads((run / "sft_dataset.json").read_text(encoding="utf-8"))
    assert [r["conversations"] for r in by_card] == [e["conversations"] for e in examples]
