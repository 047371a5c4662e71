"""`autodata eval`: the Search-R1 loop against a scripted student and the real BM25 index."""

import json
import re

import pytest

from autodata.llm import LLMSession
from autodata.search import format_hits
from autodata.seeds import SeedItem, write_seeds
from autodata.settings import load_settings
from autodata.trajectory import inference_prompt, render_information
from evals.evaluate import LoopSettings, evaluate
from evals.scoring import score_predictions_file
from tests.fakes.openai_server import ScriptedOpenAI

ITEMS = [
    SeedItem(id="q1", question="who wrote hamlet", golden_answers=["William Shakespeare"], metadata={"task_type": "a"}),
    SeedItem(id="q2", question="capital of france", golden_answers=["Paris"], metadata={"task_type": "b"}),
    SeedItem(id="q3", question="who discovered penicillin", golden_answers=["Alexander Fleming"]),
]


def student(request: dict) -> str:
    """Searches once with the question, then answers with the first passage's title."""
    messages = request["messages"]
    if len(messages) == 1:
        question = messages[0]["content"].split("Question: ")[-1].strip().rstrip("?")
        if "penicillin" in question:
            return "I think it is Fleming."  # no tags at all: invalid format
        return f"<think> I need to look this up. </think>\n<search> {question} </search> trailing text"
    title = re.search(r'Doc 1\(Title: "([^"]+)"\)', messages[-1]["content"]).group(1)
    answer = {"Hamlet": "William Shakespeare", "Paris": "Lyon"}[title]
    return f"<think> The first document says it. </think>\n<answer> {answer} </answer>"


def run(fake, monkeypatch, out, bm25_index, items=ITEMS):
    monkeypatch.setenv("AUTODATA_ROLES__STUDENT__BASE_URL", fake.url)
    monkeypatch.setenv("AUTODATA_ROLES__STUDENT__MODEL", "fake")
    with LLMSession(load_settings()) as llms:
        return evaluate(
            items, out, client=llms.client("student"), retriever=bm25_index, loop=LoopSettings(), show_progress=False
        )


def test_predictions_metrics_and_trajectories(tmp_path, monkeypatch, bm25_index):
    with ScriptedOpenAI(reply=student) as fake:
        metrics = run(fake, monkeypatch, tmp_path / "out", bm25_index)
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [p["id"] for p in predictions] == ["q1", "q2", "q3"]
    assert [p["predicted_answer"] for p in predictions] == ["William Shakespeare", "Lyon", ""]
    assert metrics["em"] == pytest.approx(1 / 3) and metrics["invalid_format_rate"] == pytest.approx(1 / 3)
    assert metrics["mean_searches"] == pytest.approx(2 / 3, abs=1e-4)
    assert metrics["by_type"] == {
        "a": {"n": 1, "em": 1.0, "subem": 1.0, "f1": 1.0},
        "b": {"n": 1, "em": 0.0, "subem": 0.0, "f1": 0.0},
    }
    # metrics recomputed from the predictions file agree
    write_seeds(tmp_path / "dev.json", ITEMS)
    rescored = score_predictions_file(tmp_path / "out" / "predictions.json", tmp_path / "dev.json")
    assert {k: rescored[k] for k in ("em", "subem", "f1")} == {k: metrics[k] for k in ("em", "subem", "f1")}

    row = json.loads((tmp_path / "out" / "trajectories.jsonl").read_text().splitlines()[0])
    messages = row["messages"]
    assert messages[0] == {"role": "user", "content": inference_prompt("who wrote hamlet")}
    assert messages[1]["content"] == "<think> I need to look this up. </think>\n<search> who wrote hamlet </search>"
    expected = render_information(format_hits(bm25_index.search(["who wrote hamlet"], topk=3)[0]))
    assert messages[2] == {"role": "user", "content": expected}
    assert fake.requests[0]["stop"] == ["</search>"]


def test_searching_until_the_turns_run_out_is_not_valid_format(tmp_path, monkeypatch, bm25_index):
    def searcher(request):  # well-formed turns, but never an answer
        return "<think> I need more. </think>\n<search> hamlet </search>"

    with ScriptedOpenAI(reply=searcher) as fake:
        metrics = run(fake, monkeypatch, tmp_path / "out", bm25_index, items=ITEMS[:1])
    assert metrics["mean_searches"] == 4 and metrics["invalid_format_rate"] == 1.0 and metrics["answered_rate"] == 0


def test_hidden_test_split_gets_predictions_only_and_runs_resume(tmp_path, monkeypatch, bm25_index):
    hidden = [SeedItem(id=i.id, question=i.question) for i in ITEMS]
    with ScriptedOpenAI(reply=student) as fake:
        assert run(fake, monkeypatch, tmp_path / "test", bm25_index, items=hidden[:2]) is None
        sent = len(fake.requests)
        assert run(fake, monkeypatch, tmp_path / "test", bm25_index, items=hidden) is None
        assert len(fake.requests) == sent + 1  # only q3 was new
    assert not (tmp_path / "test" / "metrics.json").exists()
    assert len(json.loads((tmp_path / "test" / "predictions.json").read_text())) == 3


def test_a_torn_last_line_is_answered_again_and_nothing_is_written_onto_it(tmp_path, monkeypatch, bm25_index):
    with ScriptedOpenAI(reply=student) as fake:
        run(fake, monkeypatch, tmp_path / "out", bm25_index, items=ITEMS[:1])
        log = tmp_path / "out" / "trajectories.jsonl"
        with open(log, "a", encoding="utf-8") as f:
            f.write('{"id": "q2", "question": "capital of fr')  # a kill in the middle of q2's write
        sent = len(fake.requests)
        run(fake, monkeypatch, tmp_path / "out", bm25_index)
        assert len(fake.requests) == sent + 3  # q2 again (search, answer) and q3 (one reply)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(row["id"] for row in rows) == ["q1", "q2", "q3"]


def test_cli_eval_with_baselines_on_a_world_split(tmp_path, monkeypatch, corpus_file, capsys):
    from autodata.cli import main
    from tests.conftest import make_world

    dev = [(i.id, i.question, i.golden_answers[0]) for i in ITEMS]
    world = make_world(tmp_path / "own", corpus_file, dev=dev)  # eval searches the world's own index

    def reply(request):
        content = request["messages"][0]["content"]
        if content.startswith("Answer the given question directly"):
            return "<answer> Paris </answer>"
        if content.startswith("Answer the given question using the documents"):
            return "no tags"
        return student(request)

    with ScriptedOpenAI(reply=reply) as fake:
        monkeypatch.setenv("AUTODATA_ROLES__STUDENT__BASE_URL", fake.url)
        monkeypatch.setenv("AUTODATA_ROLES__STUDENT__MODEL", "fake")
        assert (
            main(
                [
                    "eval",
                    "--world",
                    str(world),
                    "--split",
                    "dev",
                    "--out",
                    str(tmp_path / "ev"),
                    "--baselines",
                    "--limit",
                    "2",
                ]
            )
            == 0
        )
    out = capsys.readouterr().out
    assert re.search(r"search_agent\s+2\s+0\.500", out)
    assert re.search(r"direct\s+2\s+0\.500", out)  # "Paris" is right for q2
    assert re.search(r"naive_rag\s+2\s+0\.000\s+0\.000\s+0\.000\s+1\.000\s+1\.00", out)
    assert json.loads((tmp_path / "ev" / "baselines" / "direct" / "metrics.json").read_text())["n"] == 2
    assert [p["id"] for p in json.loads((tmp_path / "ev" / "predictions.json").read_text())] == ["q1", "q2"]


def test_export_llamafactory_writes_yaml_and_refuses_empty_data(tmp_path, capsys):
    import yaml

    from autodata.cli import main
    from autodata.trajectory import AnswerStep, SearchStep, Trajectory, to_sharegpt

    trajectory = Trajectory(
        question="who wrote hamlet",
        steps=[
            SearchStep(think="t", query="hamlet", observation='Doc 1(Title: "Hamlet") text', hit_ids=["0"]),
            AnswerStep(think="t", answer="William Shakespeare"),
        ],
    )
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "sft_dataset.json").write_text(json.dumps([to_sharegpt(trajectory)]))
    assert main(["export", "llamafactory", str(tmp_path / "run")]) == 0
    assert "llamafactory-cli train" in capsys.readouterr().out
    config = yaml.safe_load((tmp_path / "run" / "qwen2_5_7b_instruct_full_sft.yaml").read_text())
    assert config["dataset"] == "search_sft" and config["template"] == "qwen" and config["finetuning_type"] == "full"
    assert config["dataset_dir"] == str((tmp_path / "run").resolve())
    info = json.loads((tmp_path / "run" / "dataset_info.json").read_text())
    assert info["search_sft"]["columns"]["messages"] == "conversations"

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "sft_dataset.json").write_text("[]")
    assert main(["export", "llamafactory", str(tmp_path / "empty")]) == 1
    assert "accepted nothing" in capsys.readouterr().err
    assert main(["export", "llamafactory", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_well_formed_turns():
    from autodata.trajectory import well_formed

    assert well_formed("<think> x </think>\n<search> q </search>")
    assert well_formed("<think>x</think><answer> Paris </answer>\n")
    assert not well_formed("<search> q </search>")  # no thinking first
    assert not well_formed("<think> x </think> Paris")  # neither a search nor an answer
    assert not well_formed("<think> x </think><search> q </search><answer> a </answer>")  # two actions


def test_eval_by_type_scores_refusals_corrections_and_conflicts():
    from evals.evaluate import compute_metrics

    def item(i, kind, answer):
        return SeedItem(id=f"t{i}", question=f"q{i}", golden_answers=[answer], metadata={"task_type": kind})

    items = [
        item(0, "insufficient_evidence", "insufficient evidence"),
        item(1, "insufficient_evidence", "insufficient evidence"),
        item(2, "simple_fact", "Paris"),
        item(3, "false_premise", "false premise: 1802"),
        item(4, "conflicting_evidence", "conflicting evidence: 1802; 1803"),
        item(5, "scope_ambiguity", "ambiguous scope: 2.1 million (city); 12 million (metropolitan area)"),
    ]
    answers = ["Insufficient evidence", "Lyon", "insufficient evidence", "false premise: 1805", "1802"]
    answers.append("ambiguous scope: 12 million (metropolitan area); 2.1 million (city)")
    rows = [{"answer": a, "format_valid": True, "searches": 1} for a in answers]
    metrics = compute_metrics(items, rows)
    # two refusals, one of them right; two items should have been refused, one was
    assert metrics["refusal"] == {"precision": 0.5, "recall": 0.5, "refused": 2, "should_refuse": 2}
    assert metrics["by_type"]["false_premise"]["form_rate"] == 1.0 and metrics["by_type"]["false_premise"]["em"] == 0
    assert metrics["by_type"]["conflicting_evidence"]["form_rate"] == 0.0
    assert metrics["by_type"]["scope_ambiguity"]["form_rate"] == 1.0
    assert "form_rate" not in metrics["by_type"]["simple_fact"]
    untyped = compute_metrics([SeedItem(id="x", question="q", golden_answers=["a"])], rows[:1])
    assert "refusal" not in untyped and "by_type" not in untyped
