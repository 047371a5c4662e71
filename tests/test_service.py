"""The REST service and its workers, in one process, against the scripted endpoint (fast).

The slow `test_service_infra.py` runs the same flow with PostgreSQL, an MLflow server and
worker processes.
"""

import httpx
import mlflow
import pytest

from autodata.errors import ConfigError
from autodata.search.server import BackgroundServer
from autodata.service import check_bind, create_app, run_worker
from autodata.settings import load_settings
from optimizers import tracking

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def service(study_world, monkeypatch):
    monkeypatch.setenv("SECRET_KEY_VAR", "sk-very-secret")  # an endpoint key: must never show in a response
    monkeypatch.setenv("AUTODATA_ROLES__WEAK__API_KEY_ENV", "SECRET_KEY_VAR")
    with BackgroundServer(create_app(load_settings(), token=TOKEN)) as server:
        yield server.url


def call(method, url, **kwargs):
    """A request with the token unless `headers` are given."""
    kwargs.setdefault("headers", AUTH)
    response = httpx.request(method, url, timeout=60, **kwargs)
    assert "sk-very-secret" not in response.text
    return response


def test_launch_watch_promote_and_synthesize_over_http(service):
    body = {
        "name": "svc",
        "trials": 2,
        "scorer": "acceptance",
        "seeds_per_trial": 2,
        "stages": [1.0],
        "rewrite_val_seeds": 0,
    }
    assert call("POST", f"{service}/studies", json=body, headers={}).status_code == 401  # no token
    launched = call("POST", f"{service}/studies", json=body)
    assert launched.status_code == 202 and launched.json()["url"] == "/studies/svc"
    assert call("POST", f"{service}/studies", json=body).status_code == 409  # already queued
    assert call("GET", f"{service}/studies/svc").json()["state"] == "queued"

    assert run_worker(load_settings(), name="w1", once=True) == 1  # the worker runs the study, then finds no work
    shown = call("GET", f"{service}/studies/svc").json()
    assert shown["state"] == "done" and [t["state"] for t in shown["trials"]] == ["COMPLETE", "COMPLETE"]
    trial = shown["trials"][0]
    assert {"score", "recipe_hash", "mlflow_run_id", "pareto", "accepted_per_seed"} <= set(trial)
    assert trial["params"]["hint_mode"] == "answer" and trial["prompt_versions"] == {
        "challenger": 1,
        "tagger": 1,
        "verifier": 1,
    }
    assert shown["best"]["trial"] in (0, 1)
    assert [s["name"] for s in call("GET", f"{service}/studies").json()] == ["svc"]

    refused = call("POST", f"{service}/studies/svc/promote", json={"trial": 0})
    assert refused.status_code == 409 and "already" in refused.json()["error"]  # trial 0 is the default recipe
    promoted = call("POST", f"{service}/studies/svc/promote", json={"trial": 0, "force": True}).json()
    assert promoted["production_version"] == 1 and "version 1" in promoted["message"]
    forced = call("POST", f"{service}/studies/svc/promote", json={"trial": 1, "force": True}).json()
    assert forced["production_version"] == 2
    assert call("POST", f"{service}/studies/svc/rollback").json()["production_version"] == 1

    job = call("POST", f"{service}/jobs/synthesize", json={"recipe": "production", "limit": 2})
    assert job.status_code == 202
    assert call("GET", f"{service}{job.json()['url']}").json()["state"] == "queued"
    assert run_worker(load_settings(), name="w2", once=True) == 1
    done = call("GET", f"{service}{job.json()['url']}").json()
    assert done["state"] == "done" and done["worker"] == "w2"
    assert done["manifest"]["recipe_source"] == "models:/autodata-recipe/1"
    assert done["progress"]["seeds_done"] == 2 and isinstance(done["usage"], dict)  # replayed from the LLM cache here
    tracking.setup(load_settings())
    logged = mlflow.get_run(done["mlflow_run_id"]).data
    assert (
        logged.tags["autodata.kind"] == "synthesis" and logged.params["recipe_hash"] == done["manifest"]["recipe_hash"]
    )

    prompts = call("GET", f"{service}/prompts/challenger").json()
    assert prompts["versions"][0]["version"] == 1 and prompts["versions"][0]["commit_message"]


def test_bad_requests_name_the_field_and_the_problem(service):
    response = call("POST", f"{service}/studies", json={"name": "bad name!", "trials": 0})
    assert response.status_code == 422
    fields = {d["field"] for d in response.json()["details"]}
    assert fields == {"name", "trials"}
    assert call("POST", f"{service}/studies", json={"name": "x", "typo": 1}).status_code == 422
    assert call("GET", f"{service}/studies/nothing").status_code == 404
    assert call("GET", f"{service}/jobs/nothing").status_code == 404
    assert call("POST", f"{service}/studies/nothing/rollback").json()["error"].startswith("Nothing to roll back")


def test_a_failing_job_is_retried_then_recorded_as_failed(service):
    job = call("POST", f"{service}/jobs/synthesize", json={"recipe": "production"}).json()
    assert run_worker(load_settings(), name="w", once=True) == 3  # nothing promoted yet: tried three times, then
    failed = call("GET", f"{service}{job['url']}").json()
    assert failed["state"] == "failed" and "Promote a study trial" in failed["error"]


def test_with_a_token_only_health_answers_without_it(service):
    for path in ("/studies", "/studies/svc", "/jobs/j1", "/prompts/challenger", "/studies/svc/rollback"):
        method = "POST" if path.endswith("rollback") else "GET"
        for headers in ({}, {"Authorization": f"Bearer {TOKEN[:-1]}"}, {"Authorization": TOKEN}):
            refused = call(method, f"{service}{path}", headers=headers)
            assert refused.status_code == 401 and "token" in refused.json()["error"], (path, headers)
    assert call("GET", f"{service}/health", headers={}).status_code == 200
    assert call("GET", f"{service}/studies").status_code == 200


def test_no_token_no_network_bind():
    with pytest.raises(ConfigError, match="AUTODATA_SERVICE_TOKEN"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "secret")
    check_bind("127.0.0.1", None)
    check_bind("localhost", None)


def test_request_paths_must_lie_under_the_operators_roots(study_world, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    allowed = tmp_path / "data"
    (allowed / "seeds").mkdir(parents=True)
    monkeypatch.setenv("AUTODATA_SERVICE_ROOTS", f'["{allowed}"]')
    with TestClient(create_app(load_settings())) as client:
        for path, body, field in (
            ("/jobs/synthesize", {"seeds": "/etc/passwd"}, "seeds"),
            ("/jobs/synthesize", {"seeds": f"{allowed}/../../etc/passwd"}, "seeds"),
            ("/jobs/synthesize", {"recipe": "/etc/shadow.yaml"}, "recipe"),
            ("/studies", {"name": "s", "world": "../../.."}, "world"),
        ):
            refused = client.post(path, json=body)
            assert refused.status_code == 422, (body, refused.text)
            assert [d["field"] for d in refused.json()["details"]] == [field]
            assert "not under the service's roots" in refused.json()["details"][0]["problem"]
        assert client.get("/studies").json() == []  # the refused study was not queued
        accepted = client.post("/jobs/synthesize", json={"seeds": str(allowed / "seeds" / "train.jsonl"), "limit": 1})
        assert accepted.status_code == 202


def test_a_fresh_service_lists_no_prompt_versions_rather_than_failing(study_world):
    from fastapi.testclient import TestClient

    with TestClient(create_app(load_settings())) as client:
        shown = client.get("/prompts/challenger")
        assert shown.status_code == 200 and shown.json() == {"role": "challenger", "versions": []}


def test_no_request_body_makes_the_service_answer_5xx(study_world):
    """Bodies of any JSON shape, and of the right fields with any values: 4xx or 2xx, never 5xx."""
    from fastapi.testclient import TestClient
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    json_values = st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
        max_leaves=8,
    )
    fields = ["name", "trials", "world", "jobs", "score_metric", "scorer", "repeats", "seeds_per_trial", "stages"]
    fields += ["pruner", "objectives", "recipe", "seeds", "limit", "target_accepted", "trial", "force", "grace_period"]
    bodies = json_values | st.dictionaries(st.sampled_from(fields), json_values, max_size=5)
    paths = st.sampled_from(["/studies", "/jobs/synthesize", "/studies/s/promote", "/studies/s/rollback"])

    with TestClient(create_app(load_settings()), raise_server_exceptions=False) as client:

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(path=paths, body=bodies)
        def never_5xx(path, body):
            response = client.post(path, json=body)
            assert response.status_code < 500, (path, body, response.text)

        never_5xx()
        for path in ("/studies/%00", "/jobs/..%2F..", "/prompts/nobody", "/studies/" + "x" * 5000):
            assert client.get(path).status_code < 500
