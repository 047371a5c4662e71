"""A run on the scripted endpoint writes the same files as the run kept in tests/fixtures/golden_run.

The fixture was written before the inner loop became typed stages; a refactor that changes a
byte of the data (items, rejections, datasets) or of the manifest's counts fails here. Regenerate
it only for an intended change of output: REGENERATE_GOLDEN=1 pytest tests/test_run_golden.py
"""

import json
import os
from pathlib import Path

import pytest

from autodata.llm import LLMSession
from autodata.recipe import Recipe
from autodata.settings import load_settings
from autodata.synthesis import synthesize
from tests.conftest import point_roles_at
from tests.fakes.agents import ScriptedAgents
from tests.fakes.openai_server import ScriptedOpenAI
from tests.test_synthesis import SEEDS  # the golden runs are of the synthesis tests' seeds

GOLDEN = Path(__file__).parent / "fixtures" / "golden_run"
DATA_FILES = (
    "trajectories.jsonl",
    "rejected.jsonl",
    "progress.jsonl",
    "sft_dataset.json",
    "midtrain.jsonl",
    "dataset_info.json",
)
# The manifest says when, how long and where; these parts vary from run to run by design.
VOLATILE = (
    "created",
    "started",
    "finished",
    "elapsed_s",
    "seconds",
    "output",
    "seeds_file",
    "llm_totals",
    "llm_per_accepted_item",
    "autodata_version",
    "seeds_sha256",
)


def stable(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k not in VOLATILE}


RECIPES = {
    "default": Recipe(),
    "rephrase": Recipe().with_changes(strategies={"keep": 0, "rephrase": 1, "multi_hop": 0}),
    "multi_hop": Recipe().with_changes(strategies={"keep": 0, "rephrase": 0, "multi_hop": 1}),
}


@pytest.mark.parametrize("name", RECIPES)
def test_scripted_run_output_is_byte_identical_to_the_kept_run(name, tmp_path, monkeypatch, bm25_index):
    golden = GOLDEN / name
    seeds = tmp_path / "seeds.json"
    seeds.write_text(json.dumps(SEEDS))
    out = tmp_path / "out"
    with ScriptedOpenAI(reply=ScriptedAgents()) as fake:
        point_roles_at(monkeypatch, fake.url)
        with LLMSession(load_settings()) as llms:
            synthesize(seeds, out, recipe=RECIPES[name], retriever=bm25_index, llms=llms, show_progress=False)
    manifest = stable(json.loads((out / "manifest.json").read_text()))
    if os.environ.get("REGENERATE_GOLDEN"):
        golden.mkdir(parents=True, exist_ok=True)
        for file in DATA_FILES:
            (golden / file).write_bytes((out / file).read_bytes())
        (golden / "run_manifest.json").write_bytes((out / "manifest.json").read_bytes())  # whole, for readers
        (golden / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    for file in DATA_FILES:
        assert (out / file).read_bytes() == (golden / file).read_bytes(), file
    assert manifest == json.loads((golden / "manifest.json").read_text())
