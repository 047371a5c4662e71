"""The LLM layer against a scripted OpenAI-compatible server over real HTTP."""

import json
import time

import pytest

from autodata.cli import main
from autodata.errors import BudgetExceeded, EndpointError
from autodata.llm import Budget, LLMSession
from autodata.llm.limiter import AdaptiveLimiter
from autodata.search.server import free_port
from autodata.settings import ROLE_NAMES, load_settings
from tests.fakes.openai_server import ScriptedOpenAI


def point_roles_at(monkeypatch, url, roles=ROLE_NAMES, **extra):
    for role in roles:
        monkeypatch.setenv(f"AUTODATA_ROLES__{role.upper()}__BASE_URL", url)
        monkeypatch.setenv(f"AUTODATA_ROLES__{role.upper()}__MODEL", "fake")
        for name, value in extra.items():
            monkeypatch.setenv(f"AUTODATA_ROLES__{role.upper()}__{name.upper()}", str(value))


def test_every_role_answers_with_accounting(monkeypatch):
    with ScriptedOpenAI(reply=lambda req: "Paris is the capital.") as fake:
        point_roles_at(monkeypatch, fake.url)
        with LLMSession(load_settings()) as llms:
            for role in ROLE_NAMES:
                assert (
                    llms.client(role).chat([{"role": "user", "content": "capital of france"}]).text
                    == "Paris is the capital."
                )
            usage = llms.usage.summary()
        assert llms.embedded_server is None
    assert set(usage) == set(ROLE_NAMES)
    assert all(u["calls"] == 1 and u["errors"] == 0 and u["completion_tokens"] == 4 for u in usage.values())
    assert all(u["prompt_tokens"] > 0 and u["latency_p50_s"] is not None for u in usage.values())
    assert len(fake.requests) == len(ROLE_NAMES)
    assert fake.requests[0]["temperature"] == 0.7 and fake.requests[0]["max_tokens"] == 512  # role defaults


def test_raw_completion_stops_at_search_tag(monkeypatch):
    with ScriptedOpenAI(reply=lambda req: "<think>x</think><search> hamlet author </search> tail") as fake:
        point_roles_at(monkeypatch, fake.url, roles=["strong"])
        with LLMSession(load_settings()) as llms:
            completion = llms.client("strong").complete("prompt", stop=["</search>"])
    assert completion.text == "<think>x</think><search> hamlet author "
    assert completion.finish_reason == "stop" and fake.requests[0]["stop"] == ["</search>"]


def test_batch_completes_when_the_endpoint_answers_429_half_the_time(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    with ScriptedOpenAI(reply=lambda req: "ok", faults=lambda call: 429 if call % 2 == 0 else None) as fake:
        point_roles_at(monkeypatch, fake.url, roles=["weak"], max_concurrency=8, max_retries=8)
        with LLMSession(load_settings()) as llms:
            client = llms.client("weak")
            client.backoff_s = 0.001
            with ThreadPoolExecutor(8) as pool:
                texts = list(pool.map(lambda i: client.chat([{"role": "user", "content": str(i)}]).text, range(40)))
            usage = llms.usage.summary()["weak"]
            limit_after = client.limiter.limit
    assert texts == ["ok"] * 40
    assert usage["calls"] == 40 and usage["errors"] == 0
    assert usage["retries"] == fake.statuses.count(429) > 0
    assert len(fake.requests) == 40 + usage["retries"]
    assert limit_after < 8  # backed off


def test_5xx_and_timeouts_are_retried_then_reported(monkeypatch):
    with ScriptedOpenAI(reply=lambda req: "ok", faults=lambda call: 503 if call <= 2 else None) as fake:
        point_roles_at(monkeypatch, fake.url, roles=["judge"], max_retries=3)
        with LLMSession(load_settings()) as llms:
            llms.client("judge").backoff_s = 0.001
            assert llms.client("judge").chat([{"role": "user", "content": "x"}]).text == "ok"
            assert llms.usage.summary()["judge"]["retries"] == 2
    with ScriptedOpenAI(reply=lambda req: "ok", faults=lambda call: 500) as fake:
        point_roles_at(monkeypatch, fake.url, roles=["judge"], max_retries=2)
        with LLMSession(load_settings()) as llms:
            llms.client("judge").backoff_s = 0.001
            with pytest.raises(EndpointError, match=r"Role 'judge': endpoint .* kept failing after 3 attempts"):
                llms.client("judge").chat([{"role": "user", "content": "x"}])
            assert llms.usage.summary()["judge"]["errors"] == 1
    with ScriptedOpenAI(reply=lambda req: "slow", latency_s=1.0) as fake:
        point_roles_at(monkeypatch, fake.url, roles=["judge"], max_retries=1, timeout_s=0.2)
        with LLMSession(load_settings()) as llms:
            llms.client("judge").backoff_s = 0.001
            with pytest.raises(EndpointError, match="kept failing after 2 attempts: Request timed out"):
                llms.client("judge").chat([{"role": "user", "content": "x"}])


def test_wrong_base_url_fails_fast_naming_the_role(monkeypatch):
    url = f"http://127.0.0.1:{free_port()}/v1"
    point_roles_at(monkeypatch, url, roles=["challenger"])
    started = time.monotonic()
    with LLMSession(load_settings()) as llms:
        with pytest.raises(EndpointError, match=rf"Role 'challenger': endpoint {url} .* is unreachable"):
            llms.client("challenger").chat([{"role": "user", "content": "x"}])
    assert time.monotonic() - started < 5


def test_wrong_model_name_says_so(monkeypatch):
    with ScriptedOpenAI() as fake:
        point_roles_at(monkeypatch, fake.url, roles=["strong"])
        monkeypatch.setenv("AUTODATA_ROLES__STRONG__MODEL", "gpt-nope")
        with LLMSession(load_settings()) as llms:
            with pytest.raises(EndpointError, match=r"Role 'strong'.*HTTP 404.*gpt-nope.*roles.strong.model"):
                llms.client("strong").chat([{"role": "user", "content": "x"}])


def test_budget_stops_the_job_cleanly(monkeypatch):
    with ScriptedOpenAI(reply=lambda req: "one two three") as fake:
        point_roles_at(monkeypatch, fake.url, roles=["weak"])
        with LLMSession(load_settings(), budget=Budget(max_calls=3)) as llms:
            for _ in range(3):
                llms.client("weak").chat([{"role": "user", "content": "x"}])
            with pytest.raises(BudgetExceeded, match="3 of 3 calls"):
                llms.client("weak").chat([{"role": "user", "content": "x"}])
        assert len(fake.requests) == 3


def test_api_key_comes_from_the_named_variable(monkeypatch):
    seen = []
    with ScriptedOpenAI(reply=lambda req: "ok") as fake:
        point_roles_at(monkeypatch, fake.url, roles=["optimizer"], api_key_env="OPTIMIZER_KEY")
        monkeypatch.setenv("OPTIMIZER_KEY", "sk-test-123")
        import httpx

        original = httpx.Client.send

        def spy(self, request, **kwargs):
            seen.append(request.headers.get("authorization"))
            return original(self, request, **kwargs)

        monkeypatch.setattr(httpx.Client, "send", spy)
        with LLMSession(load_settings()) as llms:
            llms.client("optimizer").chat([{"role": "user", "content": "x"}])
    assert seen == ["Bearer sk-test-123"]


def test_adaptive_limiter_halves_once_per_generation_and_recovers():
    limiter = AdaptiveLimiter(8)
    with limiter.slot() as first, limiter.slot() as second:
        pass
    limiter.on_rate_limited(first)
    limiter.on_rate_limited(second)  # same burst: no news
    assert limiter.limit == 4
    with limiter.slot() as later:
        pass
    limiter.on_rate_limited(later)
    assert limiter.limit == 2
    for _ in range(2 + 3 + 4):
        limiter.on_success()
    assert limiter.limit == 5
    for _ in range(100):
        limiter.on_success()
    assert limiter.limit == 8


# --- the DSPy path --------------------------------------------------------------------


def test_dspy_predict_goes_through_the_role_client_with_schema_and_cache(monkeypatch):
    import dspy

    from autodata.llm.dspy_engine import RoleEngine  # noqa: F401  (imports dspy with the cost map offline)

    class Answer(dspy.Signature):
        """Answer the question."""

        question: str = dspy.InputField()
        answer: str = dspy.OutputField(desc="a short answer")

    class SchemaAdapter(dspy.JSONAdapter):
        def __call__(self, lm, lm_kwargs, signature, demos, inputs):
            schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
            lm_kwargs = {
                **lm_kwargs,
                "response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": schema}},
            }
            return super().__call__(lm, lm_kwargs, signature, demos, inputs)

    with ScriptedOpenAI(reply=lambda req: json.dumps({"answer": "Paris"})) as fake:
        point_roles_at(monkeypatch, fake.url, roles=["challenger"], json_mode="json_object")
        with LLMSession(load_settings()) as llms:
            with dspy.context(lm=llms.dspy_lm("challenger"), adapter=SchemaAdapter()):
                first = dspy.Predict(Answer)(question="capital of france?")
                again = dspy.Predict(Answer)(question="capital of france?")
            usage = llms.usage.summary()["challenger"]
        sent = fake.requests[0]
    assert first.answer == again.answer == "Paris"
    assert len(fake.requests) == 1 and usage["calls"] == 1  # the second answer came from the disk cache
    assert sent["response_format"] == {
        "type": "json_object",
        "schema": {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]},
    }
    assert "capital of france?" in sent["messages"][-1]["content"]

    with ScriptedOpenAI(reply=lambda req: json.dumps({"answer": "Paris"})) as fake:
        point_roles_at(monkeypatch, fake.url, roles=["challenger"])
        with LLMSession(load_settings(), cache=False) as llms:
            with dspy.context(lm=llms.dspy_lm("challenger"), adapter=dspy.JSONAdapter()):
                dspy.Predict(Answer)(question="capital of france?")
                dspy.Predict(Answer)(question="capital of france?")
        assert len(fake.requests) == 2  # --no-cache: both sent


# --- the CLI ----------------------------------------------------------------------------


def test_llm_check_prints_each_role_and_fails_on_a_bad_one(monkeypatch, capsys):
    with ScriptedOpenAI(reply=lambda req: "Paris.") as fake:
        point_roles_at(monkeypatch, fake.url)
        monkeypatch.setenv("AUTODATA_ROLES__JUDGE__BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
        code = main(["llm", "check"])
    out = capsys.readouterr().out
    assert code == 1
    assert "challenger ok" in out and f"fake @ {fake.url}: 'Paris.'" in out
    assert "judge      FAIL  Role 'judge'" in out and "is unreachable" in out
    assert len(out.strip().splitlines()) == len(ROLE_NAMES)


def test_a_shared_limiter_gives_back_only_a_dead_workers_slots():
    """The Ray executor's per-endpoint limiter (an asyncio actor class, driven here without Ray)."""
    import asyncio

    from autodata.ray_executor import SharedLimiter

    async def scenario():
        shared = SharedLimiter(3)
        for holder in ("w0:dead", "w0:dead", "w1:alive"):
            await shared.acquire(holder)
        waiting = asyncio.create_task(shared.acquire("w0:restarted"))  # all 3 slots held: it waits
        await asyncio.sleep(0.01)
        assert not waiting.done()
        assert await shared.forget(0, keep="w0:restarted") == 2  # worker 0 died holding two
        await asyncio.wait_for(waiting, 1)
        await shared.release("w1:alive")
        await shared.release("w1:alive")  # a second release of one slot is ignored
        generation = await shared.acquire("w1:alive")
        await shared.on_rate_limited(generation)  # a 429 seen by one worker halves the limit for all
        await shared.on_rate_limited(generation)  # once per generation
        return shared.state()

    assert asyncio.run(scenario()) == {"limit": 1, "max_limit": 3, "held": {"w0:restarted": 1, "w1:alive": 1}}


def test_limiter_slots_wake_one_waiter_per_freed_slot():
    import threading

    limiter = AdaptiveLimiter(2)
    peak, inside, lock = [0], [0], threading.Lock()

    def work():
        with limiter.slot():
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.005)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert peak[0] == 2 and limiter.try_acquire() == 0 and limiter.try_acquire() == 0 and limiter.try_acquire() is None
