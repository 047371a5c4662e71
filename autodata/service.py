"""autodata as a service: a REST API over `autodata.api`, and the workers that do its work.

`create_app(settings)` builds the FastAPI app (OpenAPI at `/docs`). Launching a study or a
synthesis job only queues it in the study storage database (`autodata.workqueue`);
`run_worker` processes, started on any number of machines against the same database,
do the work. Reads (studies, jobs, prompts) come straight from Optuna, the queue and
MLflow. Every endpoint but `/health`, reads included, requires `Authorization: Bearer
$AUTODATA_SERVICE_TOKEN` when it is set; without a token the service only binds to loopback. Like the CLI, this layer converts input and
output and nothing else.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from autodata import api
from autodata._version import __version__
from autodata.errors import AutodataError, BudgetExceeded, ConfigError
from autodata.llm import Budget
from autodata.settings import Settings
from autodata.synthesis import run_totals
from autodata.workqueue import LeaseLost, State, Work, WorkQueue
from optimizers.promotion import PromotionRefused
from optimizers.study import TrialRow

logger = logging.getLogger(__name__)

TOKEN_ENV = "AUTODATA_SERVICE_TOKEN"
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StudyRequest(_Request):
    name: Name
    trials: int = Field(3, ge=1, le=10_000)
    world: str | None = None  # a world folder as the workers see it; None: theirs (AUTODATA_WORLD or the demo)
    jobs: int = Field(1, ge=1, le=64)  # trials in parallel per worker
    score_metric: Literal["likelihood", "em", "subem", "f1", "format_valid"] | None = None
    scorer: Literal["proxy", "acceptance"] | None = None
    repeats: int | None = Field(None, ge=1, le=16)  # proxy trainings per trial; the intervals cover their spread
    seeds_per_trial: int | None = Field(None, ge=1)
    stages: list[Annotated[float, Field(gt=0, le=1)]] | None = None
    pruner: Literal["median", "none"] | None = None
    objectives: Literal["score", "score,calls"] | None = None
    rewrite_val_seeds: int | None = Field(None, ge=0)
    heartbeat_interval: int | None = Field(None, ge=1)  # seconds between a running trial's heartbeats
    grace_period: int | None = Field(None, ge=2)  # seconds without one before another worker retries the trial

    def paths(self) -> dict[str, str]:
        """The fields that name files on the workers' machines."""
        return {"world": self.world} if self.world else {}


class PromoteRequest(_Request):
    trial: int | None = Field(None, ge=0)  # None: the highest score
    force: bool = False  # promote although the gain on the confirm split is not above 0 at 95% (recorded)


class SynthesizeRequest(_Request):
    recipe: str = "production"  # "default", "production", models:/autodata-recipe@ALIAS or /N
    world: str | None = None
    seeds: str | None = None  # a seed file as the workers see it; None: the world's train split
    limit: int | None = Field(None, ge=1)
    target_accepted: int | None = Field(None, ge=1)  # draw seeds only until this many items are accepted
    mlflow: bool = True  # log the finished run to MLflow (counts, recipe, samples, its page), as studies do

    def paths(self) -> dict[str, str]:
        """The fields that name files on the workers' machines (a recipe not from the registry is a file)."""
        named = {"world": self.world, "seeds": self.seeds}
        if self.recipe not in ("default", "production") and not self.recipe.startswith("models:/"):
            named["recipe"] = self.recipe
        return {field: value for field, value in named.items() if value}


# --- responses ----------------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


class StudyLaunched(BaseModel):
    name: str
    work_id: str
    url: str  # where to watch it: GET /studies/NAME


class StudySummary(BaseModel):
    name: str
    trials: int
    url: str
    state: State | None  # its queued work's state; None: the study was not launched through the service


class StudyDetail(BaseModel):
    name: str
    state: State | None
    error: str | None  # the last error of its queued work
    trials: list[TrialRow]
    best: TrialRow | None  # the highest score (on the Pareto front, with two objectives)


class ProductionChange(BaseModel):
    message: str
    production_version: int | None  # the autodata-recipe version now at production


class JobLaunched(BaseModel):
    id: str
    url: str  # where to watch it: GET /jobs/ID


class JobProgress(BaseModel):
    """A synthesis job's totals as its worker last reported them (`autodata.synthesis.run_totals`)."""

    model_config = ConfigDict(extra="allow")

    seeds_done: int = 0
    accepted: int = 0
    rejected: int = 0
    llm_calls: int = 0


NO_PROGRESS = {"seeds_done": 0, "accepted": 0, "rejected": 0, "llm_calls": 0}


class JobView(BaseModel):
    """A synthesis job: its progress, and the manifest, LLM usage (calls, tokens: the cost) and MLflow run when done
    (`GET /jobs/ID` leaves them out before: every other field is always set)."""

    id: str
    state: State
    spec: dict[str, Any]  # the SynthesizeRequest as queued
    worker: str | None
    error: str | None
    progress: JobProgress
    manifest: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    mlflow_run_id: str | None = None  # the finished run's MLflow run (its counts, samples and page)


class PromptVersion(BaseModel):
    version: int
    commit_message: str | None
    status: str  # "accepted", or "rejected": it lost its validation and is never selected as "latest"
    val_score: float | None
    parent_val_score: float | None
    template: str


class PromptVersions(BaseModel):
    role: Literal["challenger", "tagger", "verifier"]
    versions: list[PromptVersion]


class ErrorBody(BaseModel):
    error: str


class Problem(BaseModel):
    field: str
    problem: str


class InvalidRequest(BaseModel):
    error: Literal["invalid request"] = "invalid request"
    details: list[Problem]


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The work cannot be done as asked (the reason in `error`)."},
    401: {"model": ErrorBody, "description": "A bearer token is required."},
    422: {"model": InvalidRequest, "description": "The request's fields are wrong."},
}


def create_app(settings: Settings, *, token: str | None = None) -> FastAPI:
    """The service's app. `token`: the bearer token every endpoint but `/health` requires (None: none;
    `check_bind` then keeps the service on loopback)."""

    def authorized(request: Request) -> None:
        if request.url.path == "/health" or not token:
            return
        sent = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(sent, f"Bearer {token}".encode()):  # constant time: the token leaks no prefix
            raise HTTPException(status_code=401, detail="a bearer token is required: Authorization: Bearer TOKEN")

    app = FastAPI(
        dependencies=[Depends(authorized)],
        title="autodata",
        version=__version__,
        description="Launch and watch recipe-optimization studies and synthesis jobs; compare prompt "
        "versions; promote recipes to production.",
    )
    from optimizers import tracking
    from optimizers.study import open_storage

    queue = WorkQueue(settings.effective_optuna_storage)
    storage = settings.effective_optuna_storage
    # Create the Optuna and MLflow tables once, here, before workers start: processes that
    # first touch a fresh database together race in its schema migrations.
    open_storage(storage)
    tracking.setup(settings)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "problem": e["msg"]} for e in err.errors()
        ]
        return JSONResponse(status_code=422, content={"error": "invalid request", "details": problems})

    @app.exception_handler(AutodataError)
    async def _our_error(request: Request, err: AutodataError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"error": str(err)})

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse(status_code=err.status_code, content={"error": err.detail})

    def under_roots(body: StudyRequest | SynthesizeRequest) -> None:
        """422 for a path field outside the operator's roots: a token holder must not make workers read
        any file of theirs (`"seeds": "/etc/passwd"`, `"world": "../../.."`)."""
        roots = settings.effective_service_roots
        outside = [
            {
                "loc": ("body", field),
                "msg": f"{value!r} is not under the service's roots ({', '.join(map(str, roots))})",
            }
            for field, value in body.paths().items()
            if not any(Path(value).expanduser().resolve().is_relative_to(root) for root in roots)
        ]
        if outside:
            raise RequestValidationError(outside)

    @app.get("/health")
    def health() -> Health:
        return Health(version=__version__)

    conflict = {409: {"model": ErrorBody, "description": "It is queued or running already."}}

    @app.post("/studies", status_code=202, responses={**ERRORS, **conflict})
    def launch_study(body: StudyRequest) -> StudyLaunched:
        under_roots(body)
        running = [w for w in queue.list("study") if w.spec["name"] == body.name and w.state in ("queued", "running")]
        if running:
            raise HTTPException(status_code=409, detail=f"study {body.name!r} is already queued or running")
        work_id = queue.submit("study", body.model_dump(exclude_none=True))
        return StudyLaunched(name=body.name, work_id=work_id, url=f"/studies/{body.name}")

    @app.get("/studies", responses={400: ERRORS[400], 401: ERRORS[401]})
    def list_studies() -> list[StudySummary]:
        import optuna

        from optimizers.study import open_storage

        summaries = optuna.get_all_study_summaries(open_storage(storage))
        works = {w.spec["name"]: w for w in queue.list("study")}
        return [
            StudySummary(
                name=s.study_name,
                trials=s.n_trials,
                url=f"/studies/{s.study_name}",
                state=works[s.study_name].state if s.study_name in works else None,
            )
            for s in summaries
        ]

    not_found = {404: {"model": ErrorBody, "description": "No such study or job."}}

    @app.get("/studies/{name}", responses={**ERRORS, **not_found})
    def show_study(name: str) -> StudyDetail:
        works = [w for w in queue.list("study") if w.spec["name"] == name]
        try:
            rows, best = api.study_rows(name, settings=settings, storage=storage)
        except AutodataError:
            if not works:
                raise HTTPException(status_code=404, detail=f"no study named {name!r}") from None
            rows, best = [], None  # queued: no worker has created it yet
        return StudyDetail(
            name=name,
            state=works[-1].state if works else None,
            error=works[-1].error if works else None,
            trials=rows,
            best=best,
        )

    refused = {409: {"model": ErrorBody, "description": "The promotion gate refused: the reason in `error`."}}

    @app.post("/studies/{name}/promote", responses={**ERRORS, **refused})
    def promote(name: str, body: PromoteRequest | None = None) -> ProductionChange:
        body = body or PromoteRequest()
        try:
            message = api.promote(name, trial=body.trial, force=body.force, settings=settings, storage=storage)
        except PromotionRefused as err:
            raise HTTPException(status_code=409, detail=str(err)) from None
        return ProductionChange(message=message, production_version=_production_version(settings))

    @app.post("/studies/{name}/rollback", responses=ERRORS)
    def rollback(name: str) -> ProductionChange:
        message = api.promote(name, rollback=True, settings=settings, storage=storage)
        return ProductionChange(message=message, production_version=_production_version(settings))

    @app.post("/jobs/synthesize", status_code=202, responses=ERRORS)
    def launch_synthesis(body: SynthesizeRequest) -> JobLaunched:
        under_roots(body)
        work_id = queue.submit("synthesize", body.model_dump(exclude_none=True))
        return JobLaunched(id=work_id, url=f"/jobs/{work_id}")

    # manifest and usage appear when the job is done
    @app.get("/jobs/{work_id}", response_model_exclude_unset=True, responses={**ERRORS, **not_found})
    def show_job(work_id: str) -> JobView:
        work = queue.get(work_id)
        if work is None or work.kind != "synthesize":
            raise HTTPException(status_code=404, detail=f"no synthesis job {work_id!r}")
        return _job_view(work)

    @app.get("/prompts/{role}", responses=ERRORS)
    def prompt_versions(role: Literal["challenger", "tagger", "verifier"]) -> PromptVersions:
        from optimizers import tracking

        tracking.setup(settings)
        versions = tracking.prompt_versions(role)
        return PromptVersions(
            role=role,
            versions=[
                PromptVersion(
                    version=int(v.version),
                    commit_message=v.commit_message,
                    status=(v.tags or {}).get(tracking.STATUS_TAG, "accepted"),
                    val_score=_number((v.tags or {}).get("autodata.val_score")),
                    parent_val_score=_number((v.tags or {}).get("autodata.parent_val_score")),
                    template=v.template,
                )
                for v in versions
            ],
        )

    return app


def _number(text: str | None) -> float | None:
    return float(text) if text is not None else None


def _production_version(settings: Settings) -> int | None:
    from optimizers import tracking

    tracking.setup(settings)
    return tracking.production_recipe_version()


def _job_view(work: Work) -> JobView:
    """A synthesis job as the API shows it: its progress as its worker last reported it, and
    the manifest and LLM usage (calls, tokens: the cost) when done."""
    done = {k: work.result.get(k) for k in ("manifest", "usage", "mlflow_run_id")} if work.result else {}
    return JobView(
        id=work.id,
        state=work.state,
        spec=work.spec,
        worker=work.owner,
        error=work.error,
        progress=JobProgress.model_validate(work.progress or NO_PROGRESS),
        **done,
    )


# --- serving ------------------------------------------------------------------------------------


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve beyond loopback without a token: anyone on the network could launch work."""
    try:
        loopback = ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        loopback = False
    if not loopback and not token:
        raise ConfigError(
            f"Refusing to bind {host} without a token: set {TOKEN_ENV} (clients then send "
            f"'Authorization: Bearer TOKEN'), or bind 127.0.0.1."
        )


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    import uvicorn

    token = os.environ.get(TOKEN_ENV) or None
    check_bind(host, token)
    uvicorn.run(create_app(settings, token=token), host=host, port=port, log_level="warning")


# --- workers ------------------------------------------------------------------------------------


def run_worker(
    settings: Settings,
    *,
    name: str | None = None,
    poll_s: float = 2.0,
    once: bool = False,
    beat_s: float = 10.0,
    drain_s: float = 30.0,
) -> int:
    """Take queued work from the study storage database and do it until stopped (Ctrl-C, SIGTERM).

    With `once`, stop when nothing is queued; returns how many pieces of work were done.
    SIGTERM drains the worker: it takes no new work and ends what it holds within `drain_s`
    (a synthesis job then stops at its next LLM call and is queued again, its folder keeping
    every finished seed; a study trial still running then is left to Optuna's heartbeats,
    which retry it elsewhere with its parameters, as after a kill).
    """
    name = name or f"{socket.gethostname()}:{os.getpid()}"
    queue = WorkQueue(settings.effective_optuna_storage)
    stop_job = threading.Event()  # the job in hand stops at its next LLM call
    draining = _drain_on_sigterm(stop_job, drain_s)
    done = 0
    while not draining.is_set():
        work = queue.claim(name)
        if work is None:
            if once:
                break
            draining.wait(poll_s)
            continue
        logger.info("worker %s: %s %s", name, work.kind, work.id)
        stop_job.clear()
        _work_on(queue, work, settings, beat_s=beat_s, stop_job=stop_job, draining=draining)
        done += 1
    return done


def _drain_on_sigterm(stop_job: threading.Event, drain_s: float) -> threading.Event:
    """An event SIGTERM sets (where this runs in the main thread); `drain_s` later, the job in hand
    is stopped, and a study's process exits as a killed one would."""
    draining = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        return draining

    def bound() -> None:
        stop_job.set()
        time.sleep(5)  # a synthesis job hands itself back in moments; a study's trial cannot be cut short
        os._exit(143)

    def on_sigterm(signum, frame) -> None:
        logger.warning("SIGTERM: taking no new work; ending the work in hand within %.0f s", drain_s)
        draining.set()
        deadline = threading.Timer(drain_s, bound)
        deadline.daemon = True  # a worker that drained in time exits without waiting for it
        deadline.start()

    signal.signal(signal.SIGTERM, on_sigterm)
    return draining


def _work_on(
    queue: WorkQueue, work: Work, settings: Settings, *, beat_s: float, stop_job: threading.Event, draining
) -> None:
    out = _job_folder(work, settings)
    lease_lost = threading.Event()
    ended = threading.Event()
    beating = threading.Thread(target=_beat, args=(queue, work, ended, beat_s, out, lease_lost, stop_job), daemon=True)
    beating.start()
    try:
        result = _do(work, settings, stop_job, fence=lambda: queue.check_lease(work))
        if out is not None:
            queue.beat(work, run_totals(out))
        if result is not None:
            queue.finish(work, result)
    except LeaseLost as err:
        logger.warning("%s", err)
    except BudgetExceeded as err:
        if lease_lost.is_set():
            logger.warning("work %s was taken over by another worker; this worker stopped its copy", work.id)
        elif draining.is_set():
            queue.hand_back(work)
        else:
            queue.fail(work, str(err))
    except AutodataError as err:
        queue.fail(work, str(err))
    except Exception as err:  # noqa: BLE001 - a failed job is recorded; the worker goes on
        logger.error("work %s failed: %s", work.id, traceback.format_exc())
        queue.fail(work, f"{type(err).__name__}: {err}")
    finally:
        ended.set()


def _beat(
    queue: WorkQueue,
    work: Work,
    ended: threading.Event,
    every_s: float,
    out: Path | None,
    lease_lost: threading.Event,
    stop_job: threading.Event,
) -> None:
    while not ended.wait(every_s):
        try:
            queue.beat(work, run_totals(out) if out else None)
        except LeaseLost:  # another worker owns the job now: stop writing its folder
            lease_lost.set()
            stop_job.set()
            return
        except Exception as err:  # noqa: BLE001 - a missed beat is retried at the next one
            logger.warning("heartbeat of %s failed: %s", work.id, err)


def _job_folder(work: Work, settings: Settings) -> Path | None:
    """Where a synthesis job writes: named by its id under the jobs folder every worker shares, so a
    worker taking it over, on any machine, resumes it."""
    return settings.effective_jobs_dir / work.id if work.kind == "synthesize" else None


def _do(work: Work, settings: Settings, stop_job: threading.Event, fence: Callable[[], None]) -> dict | None:
    spec = dict(work.spec)
    world = spec.pop("world", None)
    if world:
        settings = settings.model_copy(update={"world": Path(world)})
    if work.kind == "study":
        name, trials = spec.pop("name"), spec.pop("trials")
        if "stages" in spec:
            spec["stages"] = tuple(spec["stages"])
        if spec.get("rewrite_val_seeds") == 0:
            spec["rewrite_prompts"] = False
        from optuna.trial import TrialState

        from optimizers.study import FINISHED

        states = [t.state for t in api.run_study(name, trials, settings=settings, **spec).trials]
        finished = sum(state in FINISHED for state in states)
        if finished < trials and TrialState.RUNNING in states:
            return None  # other workers are on its last trials; the study stays open for them
        if finished < trials:
            raise AutodataError(
                f"Study {name!r} has {finished} of {trials} finished trials ({states.count(TrialState.FAIL)} failed; "
                "their errors are in their MLflow runs and the worker's log)."
            )
        return {"trials": len(states), "finished": finished}
    out = _job_folder(work, settings)
    recipe, source = api.resolve_recipe(spec.get("recipe", "production"), settings)
    report, usage = api.synthesize(
        out,
        recipe=recipe,
        seeds=Path(spec["seeds"]) if spec.get("seeds") else None,
        limit=spec.get("limit"),
        target_accepted=spec.get("target_accepted"),
        fence=fence,
        budget=Budget(stop=stop_job),
        settings=settings,
        show_progress=False,
        recipe_source=source,
    )
    result = {"manifest": report.manifest, "usage": usage, "out": str(out), "progress": run_totals(out)}
    if spec.get("mlflow", True):
        from optimizers import tracking

        result["mlflow_run_id"] = tracking.log_synthesis(settings, out, recipe, report.manifest)
    return result
