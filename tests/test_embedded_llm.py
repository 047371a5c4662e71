"""The real embedded model (SmolLM2-135M via llama.cpp): slow, needs llama-cpp-python."""

import signal
import subprocess
import sys
import time

import pytest

from autodata.llm import LLMSession
from autodata.settings import ROLE_NAMES, load_settings
from tests.infra import alive

pytestmark = pytest.mark.slow


def test_every_role_is_answered_by_the_embedded_model_and_it_stops_after():
    with LLMSession(load_settings()) as llms:
        replies = {
            role: llms.client(role)
            .chat([{"role": "user", "content": "What is the capital of France?"}], max_tokens=24, temperature=0.0)
            .text
            for role in ROLE_NAMES
        }
        pid = llms.embedded_server.pid
        assert alive(pid)
        usage = llms.usage.summary()
    assert all("Paris" in text for text in replies.values()), replies
    assert all(usage[role]["calls"] == 1 and usage[role]["completion_tokens"] > 0 for role in ROLE_NAMES)
    assert not alive(pid)


def test_json_schema_is_enforced_by_the_embedded_model():
    # Bound the length inside the pattern: with a `pattern`, llama.cpp's grammar ignores `maxLength`.
    schema = {
        "type": "object",
        "properties": {"question": {"type": "string", "pattern": "^(Who|What|When) [^?]{5,70}\\?$"}},
        "required": ["question"],
    }
    with LLMSession(load_settings()) as llms:
        text = (
            llms.client("challenger")
            .chat(
                [{"role": "user", "content": "Write one question about Paris as JSON."}],
                json_schema=schema,
                max_tokens=60,
            )
            .text
        )
    import json
    import re

    question = json.loads(text)["question"]
    assert re.fullmatch(r"(Who|What|When) [^?]{5,70}\?", question)


def test_a_killed_job_leaves_no_model_server_behind(tmp_path):
    script = (
        "from autodata.llm import LLMSession; from autodata.settings import load_settings; import time\n"
        "llms = LLMSession(load_settings()); llms.base_url('weak')\n"
        "print(llms.embedded_server.pid, flush=True); time.sleep(600)\n"
    )
    job = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(job.stdout.readline())
        assert alive(server_pid)
        job.send_signal(signal.SIGKILL)  # a crash: no finally blocks, no atexit
        job.wait(timeout=10)
        deadline = time.monotonic() + 20
        while alive(server_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(server_pid)
    finally:
        job.kill()


def test_ctrl_c_stops_the_model_server(tmp_path):
    script = (
        "from autodata.llm import LLMSession; from autodata.settings import load_settings; import time\n"
        "with LLMSession(load_settings()) as llms:\n"
        "    llms.base_url('weak'); print(llms.embedded_server.pid, flush=True); time.sleep(600)\n"
    )
    job = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    server_pid = int(job.stdout.readline())
    job.send_signal(signal.SIGINT)
    job.wait(timeout=30)
    assert "KeyboardInterrupt" in job.stderr.read()
    assert not alive(server_pid)
