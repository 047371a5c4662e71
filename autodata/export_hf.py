"""A finished synthesis folder as a Hugging Face dataset: parquet shards, a dataset card, LLaMA-Factory's entry.

Rows are the run's `sft_dataset.json` examples as they are (what LLaMA-Factory trains on), each with
its accepted item's id, seed, question, answer and tags. Pushing to the Hub stays the user's step.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pydantic import ValidationError

from autodata._io import atomic_write_json, atomic_write_text, folder_written_whole
from autodata.errors import AutodataError
from autodata.export import DATASET_NAME, dataset_info
from autodata.items import AcceptedItem, RunManifest
from autodata.trajectory import to_sharegpt

SHARD_ROWS = 100_000
_TURN = pa.struct([("from", pa.string()), ("value", pa.string())])
_ITEM_COLUMNS = [
    ("id", pa.string()),
    ("seed_id", pa.string()),
    ("question", pa.string()),
    ("answer", pa.string()),
    ("strategy", pa.string()),
    ("task_type", pa.string()),
    ("hops", pa.int64()),
]
_SIZES = ["n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B", "1B<n<10B"]
_SIZES += ["10B<n<100B", "100B<n<1T", "n>1T"]


def size_category(rows: int) -> str:
    """The Hub's `size_categories` bucket for a number of rows."""
    return _SIZES[min(max(len(str(rows)) - 3, 0), len(_SIZES) - 1)]


def export_hf(run_dir: Path, out: Path, *, world_manifest: dict | None = None) -> dict:
    """Write `out` (parquet shards under data/, README.md, dataset_info.json) whole, or nothing."""
    run_dir, out = Path(run_dir), Path(out).resolve()
    manifest, rows = _read_run(run_dir)
    earlier_export = (out / "data").is_dir() and (out / "README.md").is_file()
    if run_dir.resolve().is_relative_to(out) or (
        out.exists() and not earlier_export and (out.is_file() or any(out.iterdir()))
    ):
        raise AutodataError(
            f"{out} is not empty and no earlier export (an export replaces it whole): pick another --out."
        )
    shards = math.ceil(len(rows) / SHARD_ROWS)
    names = [f"data/train-{i:05d}-of-{shards:05d}.parquet" for i in range(shards)]
    extra = [(k, pa.string()) for k in ("system", "tools") if k in rows[0][1]]
    schema = pa.schema([*_ITEM_COLUMNS, ("conversations", pa.list_(_TURN)), *extra])
    with folder_written_whole(out) as staging:
        (staging / "data").mkdir()
        for i, name in enumerate(names):
            chunk = rows[i * SHARD_ROWS : (i + 1) * SHARD_ROWS]
            table = pa.Table.from_pylist([{**item, **example} for item, example in chunk], schema=schema)
            pq.write_table(table, staging / name)
        atomic_write_json(staging / "dataset_info.json", dataset_info("data"))
        atomic_write_text(staging / "README.md", _card(manifest, len(rows), world_manifest or {}))
    return {
        "rows": len(rows),
        "shards": shards,
        "out": str(out),
        "card": str(out / "README.md"),
        "push_command": f"hf upload USER/NAME {shlex.quote(str(out))} --repo-type dataset",
    }


def _read_run(run_dir: Path) -> tuple[RunManifest, list[tuple[dict, dict]]]:
    """The run's manifest and its datasets' rows, each as (item columns, ShareGPT example)."""
    redo = f"Run `autodata synthesize --out {run_dir}` to the end (it resumes), then export again."
    try:
        manifest = RunManifest.read(run_dir / "manifest.json")
        examples = json.loads((run_dir / "sft_dataset.json").read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise AutodataError(f"{run_dir} is not a finished synthesis run: no {Path(err.filename).name}. {redo}") from err
    except (ValidationError, json.JSONDecodeError) as err:
        raise AutodataError(f"{run_dir}: manifest.json or sft_dataset.json is unreadable ({err}). {redo}") from err
    if not examples:
        raise AutodataError(f"{run_dir} has no accepted items in its datasets: there is nothing to export.")
    if len(examples) != manifest.items.in_datasets:
        raise AutodataError(
            f"{run_dir}: sft_dataset.json holds {len(examples)} examples, manifest.json says "
            f"{manifest.items.in_datasets}. {redo}"
        )
    # The datasets hold the accepted items in file order, less near duplicates and contaminated ones,
    # and carry no ids: each example is joined to the next item whose trajectory renders to it.
    items = AcceptedItem.read(run_dir / "trajectories.jsonl")
    rows = []
    for n, example in enumerate(examples):
        for item in items:
            if to_sharegpt(item.trajectory)["conversations"] == example["conversations"]:
                columns = {name: getattr(item, name) for name, _ in _ITEM_COLUMNS if name != "task_type"}
                rows.append(({**columns, "task_type": item.tags.task_type}, example))
                break
        else:
            raise AutodataError(f"{run_dir}: sft_dataset.json example {n} is no item of trajectories.jsonl. {redo}")
    return manifest, rows


def _card(m: RunManifest, rows: int, world: dict) -> str:
    license_ = world.get("license") if isinstance(world.get("license"), str) else "other"
    front = {
        "license": license_,
        "language": ["en"],
        "task_categories": ["question-answering", "text-generation"],
        "size_categories": [size_category(rows)],
        "tags": ["search-augmented", "agentic", "synthetic", "sharegpt", "autodata"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}],
    }
    rejections = "\n".join(f"| {reason} | {count} |" for reason, count in m.rejections.items()) or "| (none) | 0 |"
    gates = "\n".join(f"| {name} | {json.dumps(value)} |" for name, value in m.quality_gates.model_dump().items())
    sources = "; ".join(f"{s.get('name')}: {s['license']}" for s in world.get("sources", []) if "license" in s)
    world_line = world.get("name", "not given") + (f" (sources: {sources})" if sources else "")
    info = json.dumps(dataset_info("data"), indent=2)
    return f"""---
{yaml.safe_dump(front, sort_keys=False)}---

# {DATASET_NAME}: search-augmented SFT data

Questions with verified answers, each with a search agent's trajectory as a ShareGPT conversation
(`conversations`: reasoning in `<think>`, queries in `<search>`, retrieved passages in `<information>`,
the answer in `<answer>`), synthesized by autodata {m.autodata_version}. Every row is an accepted item:
a strong solver given a private hint found the answer with search, a weak solver did not.

- World: {world_line}
- Recipe: {m.recipe_name} (hash `{m.recipe_hash}`, from {m.recipe_source}); dataset version `{m.dataset_version}`
- Columns: `id`, `seed_id`, `question`, `answer`, `strategy`, `task_type`, `hops`, `conversations`, `system`, `tools`

## Counts (from the run's manifest.json)

| what | count |
|---|---|
| seeds | {m.seeds.total} |
| seeds done | {m.seeds.done} |
| seeds with evidence | {m.seeds.with_evidence} |
| accepted items | {m.items.accepted} |
| rows (accepted items in the datasets) | {m.items.in_datasets} |
| rejected (seeds and candidate questions) | {m.items.rejected_candidates} |

## Rejections

| reason | count |
|---|---|
{rejections}

## Verification

Acceptance rule `{m.acceptance_rule}` (strong solver hint: {m.hint_mode}; weak solver: {m.weak_mode}).
Acceptance rate {m.acceptance_rate} per candidate question. Quality gates:

| gate | value |
|---|---|
{gates}

## Loading

```python
from datasets import load_dataset
ds = load_dataset("parquet", data_files="data/train-*.parquet", split="train")  # in this folder
ds = load_dataset("USER/NAME", split="train")  # once pushed to the Hub
```

LLaMA-Factory: use this folder as `dataset_dir` with `dataset: {DATASET_NAME}`; its `dataset_info.json`:

```json
{info}
```
"""
