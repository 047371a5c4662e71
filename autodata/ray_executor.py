"""Synthesis on a Ray cluster: the seed stream sharded over Ray actors, one resumable output.

The driver (the `autodata synthesize --executor ray` process) keeps what makes a run
resumable: it streams the seeds, skips those already done, and is the only writer of the
run folder, appending whole seeds as their results come back. Each `SynthesisWorker`
actor runs the roles for several seeds at once (threads) with its own `LLMSession`, whose
limiter per endpoint is a proxy to one `SharedLimiter` actor per endpoint: together the
workers never have more requests in flight on an endpoint than its `max_concurrency`,
and a 429 seen by one worker halves the limit for all of them.

A worker that dies (its process killed, its node lost) loses only its seeds in flight:
the driver hands them to a live worker (Ray restarts the dead one), gives back the slots it
held, and since only the driver writes, and only whole seeds, nothing is duplicated. A seed
in flight in `SEED_DEATHS` deaths is taken for their cause: it is written as rejected
(`worker_died`), so the job goes on and a re-run does not feed it to a worker again.
Killing the driver is killing a local run: re-running the command continues.

Every node needs what a worker opens: autodata installed, the world's index folder at the
same path (or a retriever URL), and the role endpoints' API key variables in its
environment (keys are never shipped through Ray).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from autodata.errors import AutodataError, RecipeError
from autodata.items import Rejection
from autodata.llm import LLMSession
from autodata.llm.limiter import AdaptiveLimiter
from autodata.llm.session import endpoint_limits
from autodata.pipeline import SYNTHESIS_ROLES, SeedProcessor, SeedResult
from autodata.recipe import Recipe
from autodata.search.protocol import Retriever
from autodata.seeds import HeldOutQuestions, SeedItem
from autodata.settings import Settings

logger = logging.getLogger(__name__)

WAITERS_PER_LIMITER = 100_000  # requests a limiter actor may hold waiting for a slot
RESTART_TIMEOUT_S = 120
SEED_DEATHS = 3  # worker deaths with a seed in flight after which the seed is rejected, not sent again


def _ray():
    try:
        import ray
    except ImportError as err:
        raise AutodataError("--executor ray needs Ray: pip install 'autodata[ray]'") from err
    return ray


def check_ray_job(settings: Settings, *, workers: int, concurrency: int | None) -> None:
    """Fail before any work if a Ray job cannot run as configured."""
    missing = [role for role in SYNTHESIS_ROLES if not settings.endpoint(role).base_url]
    if missing:
        raise RecipeError(
            f"--executor ray needs an endpoint (base_url) for roles {', '.join(missing)}: the embedded model "
            "runs inside one process. Serve it with `autodata llm serve` and point the roles at it, or run "
            "without --executor ray."
        )
    if workers < 1 or (concurrency is not None and concurrency < 1):
        raise RecipeError(f"--workers and --concurrency must be at least 1 (got {workers} and {concurrency}).")
    _ray()


class SharedLimiter:
    """One endpoint's `AdaptiveLimiter`, as an async Ray actor that workers take slots from.

    Slots are counted per holder (`w<worker index>:<incarnation>`), so the driver can
    give back the slots of a worker's dead incarnations.
    """

    def __init__(self, max_limit: int):
        self.limiter = AdaptiveLimiter(max_limit)
        self.held: Counter[str] = Counter()
        self.changed = asyncio.Condition()

    async def acquire(self, holder: str) -> int:
        async with self.changed:
            while (generation := self.limiter.try_acquire()) is None:
                await self.changed.wait()
            self.held[holder] += 1
            return generation

    async def release(self, holder: str) -> None:
        async with self.changed:
            if self.held[holder] > 0:
                self.held[holder] -= 1
                self.limiter.release()
                self.changed.notify()

    async def forget(self, worker: int, keep: str) -> int:
        """Give back the slots of worker `worker`'s incarnations other than `keep` (they died); how many."""
        async with self.changed:
            dead = [h for h in self.held if h.startswith(f"w{worker}:") and h != keep]
            count = sum(self.held.pop(h) for h in dead)
            for _ in range(count):
                self.limiter.release()
            self.changed.notify(count)
            return count

    async def on_success(self) -> None:
        async with self.changed:
            self.limiter.on_success()
            self.changed.notify_all()  # the limit may have grown

    async def on_rate_limited(self, generation: int) -> None:
        self.limiter.on_rate_limited(generation)

    def state(self) -> dict:
        return {"limit": self.limiter.limit, "max_limit": self.limiter.max_limit, "held": dict(self.held)}


class RemoteLimiter:
    """What a `RoleClient` sees of a `SharedLimiter`: the same interface as `AdaptiveLimiter`."""

    def __init__(self, handle, holder: str):
        self.handle, self.holder = handle, holder
        self.ray = _ray()

    @contextmanager
    def slot(self):
        generation = self.ray.get(self.handle.acquire.remote(self.holder))
        try:
            yield generation
        finally:
            self.handle.release.remote(self.holder)

    def on_success(self) -> None:
        self.handle.on_success.remote()

    def on_rate_limited(self, generation: int) -> None:
        self.handle.on_rate_limited.remote(generation)


class HeldOut:
    """Holds the held-out gate for the workers: a restarted worker fetches it again.

    (A large argument of a restartable actor would live in the object store, which Ray
    warns a restart may not find; this actor is not restarted.)
    """

    def __init__(self, gate: HeldOutQuestions | None):
        self.gate = gate

    def get(self) -> HeldOutQuestions | None:
        return self.gate


class SynthesisWorker:
    """A Ray actor that runs `SeedProcessor.process` for the driver, several seeds at once."""

    def __init__(self, index: int, settings: Settings, recipe: Recipe, retriever: Retriever, actors: dict, budget):
        """`actors`: names of the job's `HeldOut` actor ("held_out") and `SharedLimiter` per base URL ("limiters").

        (Names, not handles: an actor handle among a restartable actor's arguments makes Ray
        warn that a restart may not find it.)
        """
        ray = _ray()
        self.holder = f"w{index}:{uuid.uuid4().hex[:12]}"  # this incarnation: a restart runs __init__ again
        remote = {url: RemoteLimiter(ray.get_actor(name), self.holder) for url, name in actors["limiters"].items()}
        self.llms = LLMSession(settings, budget=budget, limiters=remote)
        held_out = ray.get(ray.get_actor(actors["held_out"]).get.remote())
        self.processor = SeedProcessor(recipe, retriever, self.llms, held_out=held_out)

    def identity(self) -> dict:
        return {"holder": self.holder, "pid": os.getpid(), "node": os.uname().nodename}

    def process(self, seed: SeedItem) -> SeedResult:
        return self.processor.process(seed)


class RayExecutor:
    """Runs seeds on Ray workers (see the module docstring); a `SeedExecutor` for `synthesize`.

    Args:
        address: the Ray cluster to join (`auto`, `ray://host:10001`); None starts a local Ray.
        workers: `SynthesisWorker` actors to start (spread over the cluster's nodes).
        concurrency: seeds in flight over all workers (split evenly as each worker's threads).
    """

    def __init__(
        self,
        *,
        recipe: Recipe,
        retriever: Retriever,
        llms: LLMSession,
        held_out: HeldOutQuestions | None,
        concurrency: int,
        address: str | None = None,
        workers: int = 2,
    ):
        self.ray = _ray()
        check_ray_job(llms.settings, workers=workers, concurrency=concurrency)
        self.ledger = llms.usage  # the job's accounting and budget, kept by the driver from each seed's cost
        self.concurrency = concurrency
        self.deaths = 0  # worker deaths seen (each restarted by Ray, its seeds sent again)
        self.workers, self.limiters, self.held_out = [], {}, None
        self._started_ray = not self.ray.is_initialized()
        if self._started_ray:
            self.ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        try:
            self._start(recipe, retriever, llms, held_out, workers)
        except BaseException:
            self.__exit__()
            raise

    def _start(
        self, recipe: Recipe, retriever: Retriever, llms: LLMSession, held_out: HeldOutQuestions | None, workers: int
    ) -> None:
        job = f"autodata-{uuid.uuid4().hex[:12]}"
        names = {"held_out": f"{job}:held-out", "limiters": {}}  # what workers look the actors up by
        for n, (url, limit) in enumerate(endpoint_limits(llms.settings).items()):
            names["limiters"][url] = f"{job}:limiter:{n}"
            self.limiters[url] = (
                self.ray.remote(SharedLimiter)
                .options(name=names["limiters"][url], num_cpus=0, max_concurrency=WAITERS_PER_LIMITER)
                .remote(limit)
            )
        threads = -(-self.concurrency // workers)
        worker_class = self.ray.remote(SynthesisWorker).options(
            # one thread more than the driver sends seeds: `identity` never waits behind them
            num_cpus=0,
            max_concurrency=threads + 1,
            max_restarts=-1,
            max_task_retries=0,
            scheduling_strategy="SPREAD",
        )
        self.held_out = self.ray.remote(HeldOut).options(name=names["held_out"], num_cpus=0).remote(held_out)
        self.workers = [
            worker_class.remote(i, llms.settings, recipe, retriever, names, llms.usage.budget) for i in range(workers)
        ]
        self.identities = self.ray.get([w.identity.remote() for w in self.workers])  # fails here if one cannot start

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc) -> None:
        for actor in [*self.workers, *self.limiters.values(), *([self.held_out] if self.held_out else [])]:
            self.ray.kill(actor)
        if self._started_ray:
            self.ray.shutdown()

    def map(self, seeds: Iterable[SeedItem]) -> Iterator[SeedResult]:
        ray = self.ray
        pending: dict = {}  # object ref -> (seed, worker index)
        deaths: Counter[str] = Counter()  # seed id -> worker deaths while it was in flight
        load = [0] * len(self.workers)

        def submit(seed: SeedItem) -> None:
            index = min(range(len(self.workers)), key=load.__getitem__)
            pending[self.workers[index].process.remote(seed)] = (seed, index)
            load[index] += 1

        stream = iter(seeds)
        for seed in stream:
            submit(seed)
            if len(pending) >= self.concurrency:
                break
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            seed, index = pending.pop(ref)
            load[index] -= 1
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError as err:
                self._worker_died(index, err)
                deaths[seed.id] += 1
                if deaths[seed.id] < SEED_DEATHS:
                    submit(seed)  # it runs again on a live worker: nothing of it was written
                    continue
                result = SeedResult(seed.id, rejections=[killed_its_worker(seed.id, deaths[seed.id], err)])
            except ray.exceptions.RayTaskError as err:
                raise err.cause if isinstance(err.cause, AutodataError) else err
            else:
                self.ledger.add_totals(result.cost)
            yield result
            self.ledger.check_budget()  # the workers' calls, counted here seed by seed, against the job's budget
            if (seed := next(stream, None)) is not None:
                submit(seed)

    def _worker_died(self, index: int, err: Exception) -> None:
        """Wait for Ray to restart worker `index`, then give back the slots its dead incarnations held."""
        ray = self.ray
        self.deaths += 1
        deadline = time.monotonic() + RESTART_TIMEOUT_S
        while True:
            try:
                self.identities[index] = ray.get(
                    self.workers[index].identity.remote(), timeout=max(0.1, deadline - time.monotonic())
                )
                break
            except ray.exceptions.ActorUnavailableError:  # restarting: ask again
                if time.monotonic() > deadline:
                    raise self._gone(index, err) from None
                time.sleep(0.2)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                raise self._gone(index, err) from None
        keep = self.identities[index]["holder"]
        freed = sum(ray.get([limiter.forget.remote(index, keep) for limiter in self.limiters.values()]))
        if freed:
            logger.warning(
                "Ray worker %d died (%s); its seeds in flight run again; %d endpoint slots given back",
                index,
                err.__class__.__name__,
                freed,
            )

    def _gone(self, index: int, err: Exception) -> AutodataError:
        return AutodataError(
            f"Ray worker {index} died ({err.__class__.__name__}: {err}) and did not come back within "
            f"{RESTART_TIMEOUT_S} s. Re-run the command to continue where it stopped."
        )


def killed_its_worker(seed_id: str, deaths: int, err: Exception) -> Rejection:
    """The rejection of a seed that was in flight each time its worker died (its calls' cost is lost with them)."""
    return Rejection(
        seed_id=seed_id,
        reason="worker_died",
        detail=f"its worker died {deaths} times while it ran ({err.__class__.__name__}); not sent again",
    )
