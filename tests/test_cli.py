"""The command line, in-process and as real processes, as a user would run it."""

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from autodata.cli import main
from autodata.search.server import free_port
from tests.conftest import FACTS, write_corpus


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def test_score_prints_one_json_object(tmp_path, capsys):
    answers = write_json(
        tmp_path / "dev.json",
        [
            {"id": "1", "question": "q1", "golden_answers": ["The Beatles"]},
            {"id": "2", "question": "q2", "golden_answers": ["Paris", "City of Paris"]},
            {"id": "3", "question": "q3", "golden_answers": ["William III of England"]},
            {"id": "4", "question": "q4", "golden_answers": ["1969"]},
        ],
    )
    predictions = write_json(
        tmp_path / "pred.json",
        [
            {"id": "2", "predicted_answer": "paris"},
            {"id": "1", "predicted_answer": "Beatles!"},
            {"id": "3", "predicted_answer": "William III"},
            {"id": "4", "predicted_answer": "in 1969"},
        ],
    )
    code, out, _ = run(capsys, "score", str(predictions), str(answers))
    assert code == 0
    result = json.loads(out)
    assert result["n"] == 4 and result["em"] == 0.5 and result["subem"] == 0.75
    assert result["f1"] == pytest.approx((1 + 1 + 2 * 1 * 0.5 / 1.5 + 2 * 0.5 / 1.5) / 4, abs=1e-6)


def test_score_lists_missing_and_unknown_ids(tmp_path, capsys):
    answers = write_json(
        tmp_path / "dev.json", [{"id": str(i), "question": "q", "golden_answers": ["a"]} for i in range(3)]
    )
    predictions = write_json(
        tmp_path / "pred.json", [{"id": "0", "predicted_answer": "a"}, {"id": "x9", "predicted_answer": "a"}]
    )
    code, out, err = run(capsys, "score", str(predictions), str(answers))
    assert code == 1 and out == ""
    assert "2 id(s) have no prediction: 1, 2" in err and "1 predicted id(s) are not in" in err and "x9" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_malformed_seed_file_is_one_line_and_nothing_is_written(tmp_path, capsys):
    bad = tmp_path / "train.jsonl"
    bad.write_text('{"id": "1", "question": "q", "golden_answers": ["a"]}\n{"id": "2", "golden_answers": ["b"]}\n')
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run(capsys, "data", "check", str(bad))
    assert code == 1 and out == ""
    assert err.strip() == f"autodata: error: {bad}: 1 bad record(s): line 2: missing 'question'"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_data_check_finds_contamination_and_exits_1(tmp_path, capsys):
    train = write_json(
        tmp_path / "train.json",
        [
            {"id": "t1", "question": "who sings the theme song for the proud family", "golden_answers": ["a"]},
            {"id": "t2", "question": "when was the eiffel tower built", "golden_answers": ["1889"]},
        ],
    )
    dev = write_json(tmp_path / "dev.json", [{"id": "d1", "question": "who sings the theme song for the proud family"}])
    code, out, _ = run(capsys, "data", "check", str(train), "--against", str(dev))
    report = json.loads(out)
    assert code == 1 and report["clean"] is False
    assert report["contamination"][0]["examples"] == [{"id": "t1", "held_out_id": "d1", "overlap": 1.0}]
    code, out, _ = run(capsys, "data", "check", str(train))
    assert code == 0 and json.loads(out)["clean"] is True


def test_config_show_masks_secrets(tmp_path, capsys, monkeypatch):
    config = tmp_path / "autodata.toml"
    config.write_text(
        'tracking_uri = "postgresql://ml:pa55@db/mlflow"\n[roles.challenger]\n'
        'base_url = "http://gpu:8001/v1"\napi_key_env = "VLLM_KEY"\n'
    )
    monkeypatch.setenv("VLLM_KEY", "sk-do-not-print")
    code, out, _ = run(capsys, "--config", str(config), "config", "show")
    assert code == 0
    shown = json.loads(out)
    assert "sk-do-not-print" not in out and "pa55" not in out
    assert shown["roles"]["challenger"]["base_url"] == "http://gpu:8001/v1"
    assert shown["roles"]["challenger"]["api_key"] == "****"
    assert shown["roles"]["strong"]["base_url"].startswith("embedded")
    assert shown["tracking_uri"] == "postgresql://ml:****@db/mlflow"


def test_index_build_then_search_locally(tmp_path, capsys, monkeypatch):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    index = tmp_path / "idx"
    code, out, _ = run(capsys, "index", "build", "--corpus", str(corpus), "--out", str(index))
    assert code == 0 and f"Built {index} ({len(FACTS)} documents" in out
    code, out, _ = run(capsys, "index", "build", "--corpus", str(corpus), "--out", str(index))
    assert code == 0 and "already up to date" in out
    monkeypatch.setenv("AUTODATA_RETRIEVER__INDEX_DIR", str(index))
    code, out, _ = run(capsys, "search", "--json", "--topk", "2", "who wrote hamlet", "capital of france")
    hits = json.loads(out)
    assert code == 0 and [h[0]["id"] for h in hits] == ["0", "1"] and len(hits[0]) == 2


def test_index_build_on_a_corrupt_corpus_writes_nothing(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.jsonl", FACTS[:3])
    with open(corpus, "a") as f:
        f.write('{"id": "3", "contents": 42}\n')
    code, _, err = run(capsys, "index", "build", "--corpus", str(corpus), "--out", str(tmp_path / "idx"))
    assert code == 1 and "corpus.jsonl, line 4: contents: Input should be a valid string" in err
    assert not (tmp_path / "idx").exists()


def test_search_without_a_world_says_what_to_do(capsys):
    code, _, err = run(capsys, "search", "anything")
    assert code == 1 and "autodata world prepare" in err


def test_retriever_serve_as_a_real_process(tmp_path, bm25_index):
    """The README flow: `autodata retriever serve`, then Search-R1 requests over HTTP."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "autodata.cli",
            "retriever",
            "serve",
            "--index",
            str(bm25_index.folder),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise AssertionError(server.stdout.read().decode() if server.poll() is not None else "no start")
                time.sleep(0.1)
        body = {
            "queries": ["who discovered penicillin", "tallest mountain above sea level"],
            "topk": 3,
            "return_scores": True,
        }
        result = httpx.post(url + "/retrieve", json=body).json()["result"]
        assert "Alexander Fleming" in result[0][0]["document"]["contents"]
        assert "Mount Everest" in result[1][0]["document"]["contents"]
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert server.returncode is not None


@pytest.mark.parametrize(
    "argv, option",
    [
        (["synthesize", "--out", "OUT", "--limit", "-1"], "--limit"),
        (["synthesize", "--out", "OUT", "--limit", "0"], "--limit"),
        (["search", "--topk", "0", "hamlet"], "--topk"),
        (["study", "run", "s", "--trials", "0"], "--trials"),
        (["eval", "--out", "OUT", "--concurrency", "zero"], "--concurrency"),
        (["proxy", "--data", "D", "--out", "OUT", "--repeats", "0"], "--repeats"),
        (["demo", "--trials", "-2"], "--trials"),
    ],
)
def test_bad_numbers_fail_in_one_line_before_anything_runs(tmp_path, monkeypatch, capsys, argv, option):
    monkeypatch.setenv("AUTODATA_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main([a.replace("OUT", str(tmp_path / "out")) for a in argv])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"error: argument {option}: " in error and ("or more" in error or "not a whole number" in error)
    assert list(tmp_path.iterdir()) == []  # no home, no output folder


@pytest.mark.slow  # the UI's server takes most of a minute to start on 2 cores
def test_sigterm_stops_the_mlflow_ui_and_every_process_it_started(tmp_path):
    import signal
    import socket

    from tests.infra import wait_for

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTODATA_")} | {"AUTODATA_HOME": str(tmp_path)}
    ui = subprocess.Popen(
        [sys.executable, "-m", "autodata.cli", "mlflow", "ui", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/health", "the MLflow UI")
        ui.send_signal(signal.SIGTERM)  # to autodata alone, as a process manager sends it
        assert ui.wait(timeout=60) == 0
    finally:
        if ui.poll() is None:
            ui.kill()
    time.sleep(1)
    with socket.socket() as probe:  # nothing the UI started still holds the port
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
