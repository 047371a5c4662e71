"""No silent state changes: every `except` that swallows an error has a test.

A handler "swallows" when its body holds no `raise`: the error stops there, and the program goes
on. Each one must be harmless, and a test must show it: the test makes that error happen and
checks what is left afterwards (what the user sees, what is written or not, the value returned).
`COVERED` names that test for each such handler in autodata/, optimizers/, evals/ and prompts/;
`test_every_swallowing_except_has_a_test` fails when a handler is added or removed without it.
The tests below are those no other test file had.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from autodata.cli import main
from autodata.settings import load_settings
from tests.conftest import FACTS, write_corpus
from tests.fakes.agents import ScriptedAgents
from tests.infra import alive

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("autodata", "optimizers", "evals", "prompts")
HERE = "tests/test_swallowed_errors.py"

# "path:innermost function:exception type as written" -> the test that makes that error happen.
COVERED: dict[str, str] = {
    "autodata/_io.py:sqlite_created_whole:FileExistsError": f"{HERE}::test_a_database_another_first_start_linked_first_is_kept",
    "autodata/api.py:build_index:CorpusError": f"{HERE}::test_an_index_of_another_autodata_version_is_rebuilt",
    "autodata/api.py:check_llms:AutodataError": "tests/test_llm.py::test_llm_check_prints_each_role_and_fails_on_a_bad_one",
    "autodata/cli.py:_fractions:ValueError": f"{HERE}::test_stages_that_are_not_numbers_fail_in_one_line",
    "autodata/cli.py:cmd_demo:AutodataError": f"{HERE}::test_demo_prints_why_promotion_is_refused_and_goes_on",
    "autodata/cli.py:_run_server:KeyboardInterrupt": f"{HERE}::test_ctrl_c_as_the_server_exits_returns_130",
    "autodata/cli.py:_run_server:subprocess.TimeoutExpired": f"{HERE}::test_a_server_that_ignores_sigterm_is_killed",
    # Ctrl-C that lands after the server exited: its process group is gone when `stop` signals it.
    "autodata/cli.py:stop:ProcessLookupError": f"{HERE}::test_ctrl_c_as_the_server_exits_returns_130",
    "autodata/cli.py:main:AutodataError": "tests/test_cli.py::test_search_without_a_world_says_what_to_do",
    "autodata/cli.py:main:KeyboardInterrupt": f"{HERE}::test_ctrl_c_in_a_command_is_one_line_and_exit_130",
    "autodata/llm/client.py:_retry_after_s:ValueError": f"{HERE}::test_a_retry_after_date_falls_back_to_backoff",
    "autodata/llm/embedded.py:start:httpx.TransportError": f"{HERE}::test_the_embedded_server_is_polled_until_it_listens",
    "autodata/llm/embedded.py:stop:subprocess.TimeoutExpired": f"{HERE}::test_a_busy_embedded_server_gets_a_second_sigterm",
    "autodata/llm/embedded.py:_log_tail:OSError": f"{HERE}::test_a_server_that_died_without_a_log_says_no_log",
    "autodata/pipeline.py:_as:(AdapterParseError, ValidationError)": f"{HERE}::test_an_unparseable_reply_fails_its_item_not_the_run",
    # slow (Ray): a killed worker's seeds run again, each written once (`executor.deaths >= 1`).
    "autodata/ray_executor.py:map:ray.exceptions.RayActorError": (
        "tests/test_synthesis_ray.py::test_a_killed_ray_worker_loses_nothing_and_duplicates_nothing"
    ),
    "autodata/seeds.py:_checked:ValidationError": "tests/test_seeds.py::test_bad_jsonl_records_name_file_line_and_problem",
    "autodata/service.py:check_bind:(OSError, ValueError)": f"{HERE}::test_a_host_that_does_not_resolve_needs_a_token",
    # the check before each write finds the lease superseded: the worker stops, writing nothing more
    "autodata/service.py:_work_on:LeaseLost": (
        "tests/test_workqueue.py::test_a_worker_that_lost_its_lease_writes_nothing_more_to_the_job_folder"
    ),
    # the heartbeat found the takeover and stopped the job (BudgetExceeded): nothing recorded as failed
    "autodata/service.py:_work_on:BudgetExceeded": (
        "tests/test_workqueue.py::test_a_worker_whose_job_was_taken_over_stops_its_copy"
    ),
    "autodata/service.py:_work_on:AutodataError": (
        "tests/test_service.py::test_a_failing_job_is_retried_then_recorded_as_failed"
    ),
    "autodata/service.py:_work_on:Exception": f"{HERE}::test_a_job_failing_with_a_bug_is_recorded_and_the_worker_goes_on",
    "autodata/service.py:_beat:LeaseLost": "tests/test_workqueue.py::test_a_worker_whose_job_was_taken_over_stops_its_copy",
    "autodata/service.py:_beat:Exception": f"{HERE}::test_a_failed_heartbeat_is_logged_and_the_next_one_written",
    "optimizers/prompts.py:propose_instructions:(AdapterParseError, ValidationError)": (
        f"{HERE}::test_an_unparseable_proposal_is_skipped"
    ),
    "optimizers/prompts.py:_item_score:(AdapterParseError, ValidationError)": (
        f"{HERE}::test_an_unparseable_reply_scores_0_on_its_item"
    ),
    # study "new" does not exist yet: its settings are the options given
    "optimizers/study.py:settings_for:KeyError": "tests/test_study.py::test_a_resumed_study_keeps_how_it_scores",
    "optimizers/study.py:finished_trials:KeyError": f"{HERE}::test_a_study_never_run_has_no_finished_trials",
    "optimizers/study.py:objective:EndpointError": (
        "tests/test_study.py::test_a_dead_optimizer_endpoint_costs_the_rewrite_not_the_trial"
    ),
}


# --- the scan -----------------------------------------------------------------------------------


def swallowing_handlers() -> list[str]:
    """One key per handler without a `raise`, named by its innermost function; a second handler
    with the same key in the same function gets "#2", and so on."""
    keys: list[str] = []
    for root in SCANNED:
        for path in sorted((ROOT / root).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            _collect(tree, None, path.relative_to(ROOT).as_posix(), keys)
    return keys


def _collect(node: ast.AST, function: str | None, path: str, keys: list[str]) -> None:
    for child in ast.iter_child_nodes(node):
        if (
            isinstance(child, ast.ExceptHandler)
            and function is not None
            and not any(isinstance(n, ast.Raise) for n in ast.walk(child))
        ):
            key = f"{path}:{function}:{ast.unparse(child.type) if child.type else 'bare'}"
            seen = sum(k == key or k.startswith(f"{key}#") for k in keys)
            keys.append(f"{key}#{seen + 1}" if seen else key)
        inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
        _collect(child, inner, path, keys)


def test_every_swallowing_except_has_a_test():
    found = set(swallowing_handlers())
    new, gone = sorted(found - set(COVERED)), sorted(set(COVERED) - found)
    assert not new, (
        f"except clauses that swallow their error without a test: {new}. Re-raise, or add each to COVERED "
        "in tests/test_swallowed_errors.py with a test that makes that error happen and checks the state after."
    )
    assert not gone, f"COVERED names handlers that no longer exist (or were renamed): {gone}. Remove their entries."
    for key, node_id in COVERED.items():
        file, _, name = node_id.partition("::")
        name = name.rsplit("::", 1)[-1].split("[", 1)[0]
        assert (ROOT / file).is_file(), f"{key}: {file} does not exist"
        source = (ROOT / file).read_text(encoding="utf-8")
        assert re.search(rf"^\s*def {re.escape(name)}\(", source, re.MULTILINE), f"{key}: no test {name} in {file}"


# --- files and databases ------------------------------------------------------------------------


def test_a_database_another_first_start_linked_first_is_kept(tmp_path):
    from autodata._io import sqlite_created_whole

    path = tmp_path / "home" / "optuna.db"

    def create_while_another_start_finishes_first(url: str) -> None:
        ours = sqlite3.connect(url.removeprefix("sqlite:///"))
        ours.execute("CREATE TABLE ours (x)")
        ours.close()
        theirs = sqlite3.connect(path)  # another process's first start puts its database in place
        theirs.execute("CREATE TABLE theirs (x)")
        theirs.close()

    url = f"sqlite:///{path}"
    assert sqlite_created_whole(url, create_while_another_start_finishes_first) == url
    with sqlite3.connect(path) as db:
        assert [name for (name,) in db.execute("SELECT name FROM sqlite_master")] == ["theirs"]
    assert list(path.parent.iterdir()) == [path]  # our temporary database is gone


def test_an_index_of_another_autodata_version_is_rebuilt(tmp_path):
    from autodata import api
    from autodata.search.build import INDEX_FORMAT_VERSION, INDEX_META_FILE

    corpus = write_corpus(tmp_path / "corpus.jsonl", FACTS[:5])
    out = tmp_path / "idx"
    api.build_index(corpus, out, show_progress=False)
    meta = json.loads((out / INDEX_META_FILE).read_text())
    (out / INDEX_META_FILE).write_text(json.dumps({**meta, "format_version": "an older one"}))

    index, built = api.build_index(corpus, out, show_progress=False)
    assert built and len(index) == 5
    assert json.loads((out / INDEX_META_FILE).read_text())["format_version"] == INDEX_FORMAT_VERSION
    assert index.search(["capital of france"], topk=1)[0][0].id == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl", "idx"]  # no build folder left


def test_index_build_into_a_folder_that_is_not_an_index_keeps_its_files(tmp_path):
    from autodata import api
    from autodata.errors import AutodataError

    corpus = write_corpus(tmp_path / "corpus.jsonl", FACTS[:3])
    folder = tmp_path / "my-data"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(AutodataError, match="holds files but no autodata index"):
        api.build_index(corpus, folder, show_progress=False)
    with pytest.raises(AutodataError, match="holds files but no autodata index"):
        api.build_index(corpus, folder, force=True, show_progress=False)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"] and (folder / "notes.txt").read_text() == "mine"


def test_a_study_never_run_has_no_finished_trials(tmp_path):
    import optuna

    from optimizers.study import finished_trials

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert finished_trials("never-run", storage) == 0
    assert optuna.get_all_study_names(storage) == []  # asking created no study


# --- the command line ---------------------------------------------------------------------------


def test_stages_that_are_not_numbers_fail_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(["study", "run", "s", "--stages", "0.5,half"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith("argument --stages: '0.5,half': expected fractions in (0, 1] separated by commas, e.g. 0.5,1")
    assert list(tmp_path.iterdir()) == []  # no home, no study


def test_ctrl_c_in_a_command_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    import numpy as np

    corpus = write_corpus(tmp_path / "corpus.jsonl", FACTS[:3])

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while the index is written

    monkeypatch.setattr(np, "save", ctrl_c)
    assert main(["index", "build", "--corpus", str(corpus), "--out", str(tmp_path / "idx")]) == 130
    out, err = capsys.readouterr()
    assert err.splitlines()[-1] == "autodata: interrupted" and "Traceback" not in err and "Built" not in out
    assert not (tmp_path / "idx").exists()


def test_demo_prints_why_promotion_is_refused_and_goes_on(study_world, capsys):
    from autodata.workspace import Workspace
    from optimizers import tracking
    from optimizers.study import StudySettings, run_study
    from tests.conftest import acceptance_scorer

    with Workspace(load_settings()) as workspace:  # the demo's study, already run (here: no proxy training)
        options = StudySettings(seeds_per_trial=2, stages=(1.0,), rewrite_prompts=False)
        run_study("demo", 1, workspace=workspace, scorer=acceptance_scorer, study=options)
    capsys.readouterr()

    assert main(["demo", "--trials", "1", "--seeds-per-trial", "2"]) == 0
    out = capsys.readouterr().out
    decision = out.split("What `autodata promote demo` decides", 1)[1]
    assert "production's (default recipe) already" in decision  # trial 0 is the default recipe: refused
    assert "The default recipe's data:" in decision and "Next:" in decision  # and the demo went on
    tracking.setup(load_settings())
    assert tracking.production_recipe_version() is None  # nothing was promoted


# --- the MLflow UI's process group (`_run_server`) ----------------------------------------------


def gone_soon(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt, as in a terminal, even when pytest was started with SIGINT
    ignored (a shell's background job inherits that, and Python then never raises it)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_ctrl_c_as_the_server_exits_returns_130(tmp_path, ctrl_c_raises):
    """The Ctrl-C is handled only once the server has exited and been reaped: `stop` then signals a
    process group that no longer exists."""
    from autodata.cli import _run_server

    pid_file = tmp_path / "pid"
    server = f"import os, pathlib, time; pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid())); time.sleep(1)"
    before = signal.getsignal(signal.SIGTERM)

    def ctrl_c_once_started() -> None:
        deadline = time.monotonic() + 30
        while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)  # lands in this thread: the main thread's wait goes on

    sender = threading.Thread(target=ctrl_c_once_started)
    sender.start()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        code = _run_server([sys.executable, "-c", server])
    finally:
        sender.join()
        if signal.SIGINT in signal.sigpending():
            signal.sigwait({signal.SIGINT})
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    assert code == 130
    assert gone_soon(int(pid_file.read_text()))
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_server_that_ignores_sigterm_is_killed(tmp_path, monkeypatch, ctrl_c_raises):
    from autodata.cli import _run_server

    pid_file = tmp_path / "pid"
    server = (
        "import os, pathlib, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))\n"
        "time.sleep(60)\n"
    )
    real_wait = subprocess.Popen.wait

    def wait(self, timeout=None):
        if timeout is not None:  # the 20 s the server is given after SIGTERM, run out at once
            raise subprocess.TimeoutExpired(self.args, timeout)
        return real_wait(self)

    monkeypatch.setattr(subprocess.Popen, "wait", wait)
    main_thread = threading.main_thread().ident

    def ctrl_c_when_started() -> None:
        deadline = time.monotonic() + 30
        while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        signal.pthread_kill(main_thread, signal.SIGINT)

    sender = threading.Thread(target=ctrl_c_when_started)
    sender.start()
    try:
        code = _run_server([sys.executable, "-c", server])
    finally:
        sender.join()
    assert code == 130
    assert gone_soon(int(pid_file.read_text()))  # SIGKILLed, SIGTERM having been ignored


# --- the LLM client and the embedded model's server ---------------------------------------------


def test_a_retry_after_date_falls_back_to_backoff(monkeypatch):
    """Retry-After may be an HTTP date (RFC 9110), which the client does not read: it backs off its own way."""
    from autodata.llm import LLMSession
    from tests.conftest import point_roles_at
    from tests.fakes.openai_server import ScriptedOpenAI

    class DatedRetryAfter(ScriptedOpenAI):
        def _handler_class(self):
            class Handler(super()._handler_class()):
                def send_response(self, code, message=None):
                    super().send_response(code, message)
                    if code == 429:
                        self.send_header("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")

            return Handler

    with DatedRetryAfter(reply=lambda request: "ok", faults=lambda call: 429 if call == 1 else None) as fake:
        point_roles_at(monkeypatch, fake.url)
        with LLMSession(load_settings(), cache=False) as llms:
            client = llms.client("challenger")
            client.backoff_s = 0.01
            assert client.chat([{"role": "user", "content": "hi"}]).text == "ok"
            usage = llms.usage.summary()["challenger"]
    assert fake.statuses == [429, 200]
    assert (usage["calls"], usage["retries"], usage["errors"]) == (1, 1, 0)


def scripted_model_server(script: str, tmp_path: Path):
    """An `EmbeddedServer` whose process is `script` (argv: port, log file) in place of llama.cpp's."""
    from autodata.llm.embedded import EmbeddedServer
    from autodata.settings import EmbeddedModelSettings

    class Scripted(EmbeddedServer):
        @property
        def command(self) -> list[str]:
            return [sys.executable, "-c", script, str(self.port), str(self.log_file)]

    return Scripted(
        tmp_path / "model.gguf", EmbeddedModelSettings(startup_timeout_s=30), log_file=tmp_path / "logs" / "llm.log"
    )


SERVES_MODELS = """
import http.server, sys
class Models(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Models).serve_forever(poll_interval=0.05)
"""


@pytest.fixture
def llama_cpp_installed(monkeypatch):
    """`start` checks that llama-cpp-python is installed; the scripted servers do not need it."""
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name, package=None):
        return object() if name == "llama_cpp" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_the_embedded_server_is_polled_until_it_listens(tmp_path, llama_cpp_installed):
    import httpx

    loading = "import time; time.sleep(0.8)  # loading the model: nothing listens yet\n" + SERVES_MODELS
    server = scripted_model_server(loading, tmp_path)
    started = time.monotonic()
    with server:
        assert time.monotonic() - started >= 0.8  # it asked, was refused, and asked again
        assert httpx.get(f"{server.base_url}/models").status_code == 200
        pid = server.pid
    assert server.pid is None and gone_soon(pid)


def test_a_busy_embedded_server_gets_a_second_sigterm(tmp_path, llama_cpp_installed):
    busy = (
        "import signal, sys\n"
        "terms = []\n"
        "def on_sigterm(signum, frame):\n"
        "    terms.append(signum)\n"
        "    print(f'SIGTERM {len(terms)}', flush=True)\n"
        "    if len(terms) == 2:\n"
        "        sys.exit(0)  # the request in hand is given up\n"
        "signal.signal(signal.SIGTERM, on_sigterm)\n"
    ) + SERVES_MODELS
    server = scripted_model_server(busy, tmp_path)
    server.start()
    pid = server.pid
    server.stop()  # the first SIGTERM is not obeyed within 5 s
    assert gone_soon(pid)
    assert server.log_file.read_text().split() == ["SIGTERM", "1", "SIGTERM", "2"]  # ended by the second, not SIGKILL


def test_a_server_that_died_without_a_log_says_no_log(tmp_path, llama_cpp_installed):
    from autodata.errors import EndpointError

    dies = "import os, sys; os.remove(sys.argv[2]); sys.exit(3)"
    server = scripted_model_server(dies, tmp_path)
    with pytest.raises(
        EndpointError, match=r"exited with code 3 while starting\. Last lines of .*llm\.log:\n\(no log\)$"
    ):
        server.start()
    assert server.pid is None or not alive(server.pid)


# --- roles whose replies cannot be parsed -------------------------------------------------------


class GarblesOneStep(ScriptedAgents):
    """The scripted roles, except that the reply to `step` is not JSON when the request mentions `when`."""

    step = ""
    when = ""

    def __call__(self, request: dict) -> str:
        before = dict(self.calls)
        reply = super().__call__(request)
        step = next(s for s, n in self.calls.items() if n != before.get(s, 0))
        if step == self.step and self.when in request["messages"][-1]["content"]:
            return "Sorry, I cannot answer that in JSON."
        return reply


def garble(agents: ScriptedAgents, step: str, when: str = "") -> ScriptedAgents:
    agents.__class__ = GarblesOneStep  # same fields; a server already calling `agents` keeps calling it
    agents.step, agents.when = step, when
    return agents


def test_an_unparseable_reply_fails_its_item_not_the_run(tmp_path, monkeypatch, bm25_index):
    from autodata.llm import LLMSession
    from autodata.recipe import Recipe
    from autodata.synthesis import synthesize
    from tests.conftest import point_roles_at
    from tests.fakes.openai_server import ScriptedOpenAI

    seeds = tmp_path / "seeds.json"
    seeds.write_text(
        json.dumps(
            [
                {"id": "s1", "question": "who wrote the tragedy hamlet", "golden_answers": ["William Shakespeare"]},
                {"id": "s2", "question": "who discovered penicillin", "golden_answers": ["Alexander Fleming"]},
            ]
        )
    )
    recipe = Recipe().with_changes(strategies={"keep": 1, "rephrase": 0, "multi_hop": 0}, max_rounds=1)
    agents = garble(ScriptedAgents(), "strong_first", when="penicillin")
    with ScriptedOpenAI(reply=agents) as fake:
        point_roles_at(monkeypatch, fake.url)
        with LLMSession(load_settings()) as llms:
            report = synthesize(
                seeds, tmp_path / "out", recipe=recipe, retriever=bm25_index, llms=llms, show_progress=False
            )
    out = tmp_path / "out"
    assert [json.loads(line)["seed_id"] for line in (out / "trajectories.jsonl").read_text().splitlines()] == ["s1"]
    [rejected] = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    # both of the strong solver's attempts at s2 were unparseable: each scored 0, so s2's question is too hard
    assert (rejected["seed_id"], rejected["reason"], rejected["detail"]) == (
        "s2",
        "too_hard",
        "strong solver scored 0/2",
    )
    assert report.manifest["items"]["accepted"] == 1


def test_an_unparseable_proposal_is_skipped(scripted_roles, caplog):
    from autodata.workspace import Workspace
    from optimizers.prompts import propose_instructions

    garble(scripted_roles, "rewrite")
    with Workspace(load_settings()) as workspace, caplog.at_level(logging.WARNING, logger="optimizers.prompts"):
        proposal = propose_instructions(
            workspace.llms, "challenger", "Write one question.", "No rejections.", rollout_id="x"
        )
    assert proposal is None  # this step proposes nothing; the optimization goes on
    assert scripted_roles.calls["rewrite"] >= 1 and "instruction proposal skipped" in caplog.text


def test_an_unparseable_reply_scores_0_on_its_item(scripted_roles):
    import dspy

    from autodata.llm import LLMSession
    from optimizers.prompts import JudgeProgram, item_scores, judge_metric

    garble(scripted_roles, "judge", when="penicillin")
    cases = [
        ("who wrote hamlet", "William Shakespeare", FACTS[0][1]),
        ("who discovered penicillin", "Alexander Fleming", FACTS[10][1]),
        ("what is the capital of france", "Paris", FACTS[1][1]),
    ]
    examples = [
        dspy.Example(question=q, answer=a, evidence=e, label="accept").with_inputs("question", "answer", "evidence")
        for q, a, e in cases
    ]
    with LLMSession(load_settings()) as llms:
        scores = item_scores(JudgeProgram("Accept an answer the evidence states.", llms), judge_metric, examples)
    assert scores == [1.0, 0.0, 1.0]  # only the unparseable reply scores 0; the others are still scored


# --- the service ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host, error",
    [("a" * 64 + ".example", None), ("ours.internal", OSError("Name or service not known"))],
    ids=["a label too long (ValueError)", "no such name (OSError)"],
)
def test_a_host_that_does_not_resolve_needs_a_token(monkeypatch, host, error):
    import socket

    from autodata.errors import ConfigError
    from autodata.service import check_bind

    if error is not None:

        def no_such_name(name):
            raise socket.gaierror(-2, str(error))

        monkeypatch.setattr(socket, "gethostbyname", no_such_name)
    with pytest.raises(ConfigError, match="Refusing to bind"):
        check_bind(host, None)  # not known to be loopback: treated as reachable from the network
    check_bind(host, "secret")


def test_a_job_failing_with_a_bug_is_recorded_and_the_worker_goes_on(tmp_path, caplog):
    from autodata.service import run_worker
    from autodata.workqueue import WorkQueue

    (tmp_path / "home").mkdir()
    settings = load_settings()
    queue = WorkQueue(settings.effective_optuna_storage)
    unreadable = queue.submit("study", {"trials": 1})  # a row this version cannot read: it names no study
    with caplog.at_level(logging.ERROR, logger="autodata.service"):
        assert run_worker(settings, name="w", once=True) == 3  # tried three times, then given up
    row = queue.get(unreadable)
    assert (row.state, row.attempts, row.error) == ("failed", 3, "KeyError: 'name'")
    assert "Traceback" in caplog.text  # the bug's traceback is in the worker's log


def test_a_failed_heartbeat_is_logged_and_the_next_one_written(tmp_path, monkeypatch, caplog):
    import sqlalchemy

    from autodata.service import _beat
    from autodata.workqueue import WorkQueue

    queue = WorkQueue(f"sqlite:///{tmp_path / 'q.db'}")
    job = queue.submit("synthesize", {"limit": 1})
    work = queue.claim("w1")
    claimed_at = queue.get(job).heartbeat
    real_begin, calls = queue.engine.begin, []

    def locked_once():
        calls.append(1)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError("UPDATE autodata_work", {}, sqlite3.OperationalError("locked"))
        return real_begin()

    monkeypatch.setattr(queue.engine, "begin", locked_once)
    ended, lease_lost, stop_job = threading.Event(), threading.Event(), threading.Event()
    beating = threading.Thread(target=_beat, args=(queue, work, ended, 0.05, None, lease_lost, stop_job))
    with caplog.at_level(logging.WARNING, logger="autodata.service"):
        beating.start()
        deadline = time.monotonic() + 10
        while queue.get(job).heartbeat == claimed_at and time.monotonic() < deadline:
            time.sleep(0.02)
        ended.set()
        beating.join(timeout=10)
    assert not beating.is_alive()
    assert f"heartbeat of {job} failed" in caplog.text and "locked" in caplog.text
    row = queue.get(job)
    assert row.heartbeat > claimed_at and (row.state, row.owner) == ("running", "w1")  # the next beat was written
    assert not lease_lost.is_set() and not stop_job.is_set()  # the job goes on
