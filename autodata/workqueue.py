"""Queued work in the study storage database, for the service and its workers.

One table, `autodata_work`, in the same database as the Optuna studies (SQLite under
AUTODATA_HOME, or the team's PostgreSQL): the service adds rows, workers on any machine
claim them. A row is a study to run or a synthesis job. Because the queue lives in the
database and not in the service's memory, the service restarts without losing or
repeating work.

- A *study* row is shared: every free worker joins it, since Optuna coordinates trials on
  the same storage (a dead worker's trial is retried by another through Optuna's
  heartbeats). It is done when a worker finds the study has its trials.
- A *synthesize* row has one owner at a time, holding a lease: each claim numbers it anew
  (a fencing token). An owner that stops beating for `stale_after_s` (a killed worker, a
  lost machine, a long pause) loses it to the next worker, which resumes the job's output
  folder; the old owner's later beats, results and failures carry a superseded lease and
  raise `LeaseLost` instead of writing the row.
- `attempts` counts failures: work is queued again after a failure until its third.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    case,
    create_engine,
    inspect,
    or_,
    select,
    text,
    update,
)

from autodata._io import serialize_sqlite_transactions, sqlite_created_whole
from autodata.errors import AutodataError

Kind = Literal["study", "synthesize"]
State = Literal["queued", "running", "done", "failed"]

_metadata = MetaData()
WORK = Table(
    "autodata_work",
    _metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("spec", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("owner", String(128)),
    Column("attempts", Integer, nullable=False, default=0),  # failures so far
    Column("lease", Integer, nullable=False, default=0, server_default="0"),  # the current claim's fencing token
    Column("heartbeat", Float),
    Column("progress", Text),
    Column("result", Text),
    Column("error", Text),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
)


@dataclass(frozen=True)
class Work:
    id: str
    kind: Kind
    spec: dict[str, Any]
    state: State
    owner: str | None
    attempts: int
    lease: int
    heartbeat: float | None
    progress: dict[str, Any] | None
    result: dict[str, Any] | None
    error: str | None
    created: float
    updated: float

    @classmethod
    def from_row(cls, row) -> Work:
        m = row._mapping
        loaded = {k: json.loads(m[k]) if m[k] else None for k in ("progress", "result")}
        return cls(
            m["id"],
            m["kind"],
            json.loads(m["spec"]),
            m["state"],
            m["owner"],
            m["attempts"],
            m["lease"],
            m["heartbeat"],
            loaded["progress"],
            loaded["result"],
            m["error"],
            m["created"],
            m["updated"],
        )


def create_study_database(url: str) -> None:
    """Optuna's tables and the queue's in a new database: what `sqlite_created_whole` builds beside
    a fresh home's study database before linking it in (a kill midway leaves no half-made schema)."""
    import optuna

    optuna.storages.RDBStorage(url).engine.dispose()
    engine = create_engine(url)
    _metadata.create_all(engine)
    engine.dispose()


class LeaseLost(AutodataError):
    """Another worker took this work over; this worker must not write it."""


class WorkQueue:
    """The queue in the database at `url` (any SQLAlchemy URL); the table is created on first use."""

    def __init__(self, url: str, *, stale_after_s: float = 60.0):
        self.stale_after_s = stale_after_s
        sqlite = url.startswith("sqlite")
        url = sqlite_created_whole(url, create_study_database)
        self.engine = create_engine(url, connect_args={"timeout": 60} if sqlite else {})
        if sqlite:  # a claim must take the write lock first, or two workers could take the same row
            serialize_sqlite_transactions(self.engine)
        _metadata.create_all(self.engine)
        if "lease" not in {c["name"] for c in inspect(self.engine).get_columns("autodata_work")}:
            with self.engine.begin() as db:  # a queue made before leases were numbered
                db.execute(text("ALTER TABLE autodata_work ADD COLUMN lease INTEGER NOT NULL DEFAULT 0"))

    def submit(self, kind: Kind, spec: dict[str, Any], *, work_id: str | None = None) -> str:
        now = time.time()
        work_id = work_id or uuid.uuid4().hex
        with self.engine.begin() as db:
            db.execute(
                WORK.insert().values(
                    id=work_id, kind=kind, spec=json.dumps(spec), state="queued", created=now, updated=now, attempts=0
                )
            )
        return work_id

    def claim(self, worker: str) -> Work | None:
        """The next work this worker should do: a study not yet done (shared), else a queued or
        abandoned synthesis job (taken over), oldest first; None when there is nothing."""
        now = time.time()
        with self.engine.begin() as db:
            row = db.execute(
                select(WORK)
                .where(
                    or_(
                        (WORK.c.kind == "study") & WORK.c.state.in_(("queued", "running")),
                        (WORK.c.kind == "synthesize") & (WORK.c.state == "queued"),
                        (WORK.c.kind == "synthesize")
                        & (WORK.c.state == "running")
                        & (WORK.c.heartbeat < now - self.stale_after_s),
                    )
                )
                .order_by(WORK.c.created)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if row is None:
                return None
            # A study is shared: joining it takes no lease from the workers already in it.
            lease = WORK.c.lease + 1 if row.kind == "synthesize" else WORK.c.lease
            db.execute(
                update(WORK)
                .where(WORK.c.id == row.id)
                .values(state="running", owner=worker, heartbeat=now, updated=now, lease=lease)
            )
        return self.get(row.id)

    def beat(self, work: Work, progress: dict[str, Any] | None = None) -> None:
        """The owner is alive (and, for a job, how far it got)."""
        values = {"heartbeat": time.time(), **({"progress": json.dumps(progress)} if progress is not None else {})}
        self._write(work, **values)

    def finish(self, work: Work, result: dict[str, Any]) -> None:
        self._write(work, state="done", result=json.dumps(result, default=str), error=None, updated=time.time())

    def fail(self, work: Work, error: str, *, max_attempts: int = 3) -> None:
        """Record the error; the work is queued again until it has failed `max_attempts` times
        (a study's trials and a job's folder keep what was done)."""
        failures = WORK.c.attempts + 1
        state = case((failures >= max_attempts, "failed"), else_="queued")
        self._write(work, state=state, attempts=failures, error=error[:4000], updated=time.time())

    def hand_back(self, work: Work) -> None:
        """Queue a job again now (its folder keeps what was done), as a draining worker does."""
        if work.kind == "synthesize":
            self._write(work, state="queued", owner=None, heartbeat=None, updated=time.time())

    def check_lease(self, work: Work) -> None:
        """Raise `LeaseLost` unless `work`'s lease is still the current one: a job's writer calls it
        before each write to the job's folder, so a worker that lost its lease writes nothing more."""
        with self.engine.connect() as db:
            lease = db.execute(select(WORK.c.lease).where(WORK.c.id == work.id)).scalar()
        if lease != work.lease:
            raise LeaseLost(
                f"work {work.id} was taken over by another worker (lease {work.lease} is superseded); "
                "this worker stopped writing its folder."
            )

    def _write(self, work: Work, **values) -> None:
        """Update the row only while `work`'s lease is the current one (the fence)."""
        with self.engine.begin() as db:
            written = db.execute(
                update(WORK).where((WORK.c.id == work.id) & (WORK.c.lease == work.lease)).values(**values)
            ).rowcount
        if not written:
            raise LeaseLost(
                f"work {work.id} was taken over by another worker (lease {work.lease} is superseded); "
                "this worker's write was dropped."
            )

    def get(self, work_id: str) -> Work | None:
        with self.engine.connect() as db:
            row = db.execute(select(WORK).where(WORK.c.id == work_id)).first()
        return Work.from_row(row) if row else None

    def list(self, kind: Kind | None = None) -> list[Work]:
        query = select(WORK).order_by(WORK.c.created)
        if kind:
            query = query.where(WORK.c.kind == kind)
        with self.engine.connect() as db:
            return [Work.from_row(row) for row in db.execute(query)]
