"""Small file helpers: every file autodata writes appears whole or not at all."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from autodata.errors import DamagedFileError


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename.

    A crash or Ctrl-C leaves either the old file or the new one, never half of it.
    """
    atomic_write_lines(path, [text])


def atomic_write_lines(path: Path, lines: Iterable[str], *, fsync: bool = False) -> None:
    """`atomic_write_text` of text given piece by piece (streamed: it may be read from `path` itself).

    `fsync`: flush to disk before the rename, for files a crash must not empty.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(lines)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")


def jsonl_line(row: dict) -> str:
    """One record as a JSONL line (the one spelling every JSONL file autodata writes uses)."""
    return json.dumps(row, ensure_ascii=False) + "\n"


def atomic_write_jsonl(path: Path, rows: Iterable[dict], *, fsync: bool = False) -> None:
    atomic_write_lines(path, map(jsonl_line, rows), fsync=fsync)


def append_jsonl(path: Path, rows: Iterable[dict], *, fsync: bool = False) -> None:
    """Append records to a JSONL file in one write each call.

    Callers rewrite the file with the records they read back (`iter_jsonl`) before their first
    append after a crash, so that nothing is appended onto a torn last line.
    """
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(map(jsonl_line, rows)))
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def iter_jsonl(path: Path, *, missing_ok: bool = False) -> Iterator[dict]:
    """The records of a JSONL file autodata appends to, one line at a time (blank lines skipped).

    A torn last line (a crash in the middle of a write) ends the records: whatever was on it is
    work to do again. A damaged line with records after it (a disk error, two writers, a hand
    edit) is not a crash's trace: it raises `DamagedFileError` before the caller could drop the
    intact records behind it. A file that does not exist has no records when `missing_ok`.
    """
    if missing_ok and not Path(path).is_file():
        return
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as err:
                following = sum(1 for rest in f if rest.strip())
                if not following:
                    return
                raise DamagedFileError(
                    f"{path}, line {line_no}: not a JSON record ({err.msg}), and {following} more line(s) follow it. "
                    "Nothing was changed. Repair or remove that line (keep a copy of the file), then run again."
                ) from err


def read_jsonl(path: Path, *, missing_ok: bool = False) -> list[dict]:
    """`iter_jsonl` as a list."""
    return list(iter_jsonl(path, missing_ok=missing_ok))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_sqlite_folder(url: str) -> str:
    """Create the folder of a `sqlite:///PATH` database (SQLite creates the file, not its folder)."""
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return url


def sqlite_created_whole(url: str, create: Callable[[str], None]) -> str:
    """`url`, where a `sqlite:///PATH` database that does not exist yet is first made whole.

    `create(temporary_url)` builds the schema in a temporary file beside PATH, which is then
    linked into place: a kill during `create` (Ctrl-C in the first seconds of a first start)
    leaves only that temporary file, never a half-migrated database that no later start can
    open. When several processes start together, the first link wins and the others use it.
    Other URLs (PostgreSQL, a tracking server) are returned as they are.
    """
    url = ensure_sqlite_folder(url)
    if not url.startswith("sqlite:///"):
        return url
    path = Path(url[len("sqlite:///") :]).expanduser()
    if path.exists():
        return url
    for stale in path.parent.glob(f".{path.name}.*.creating*"):  # left by killed first starts
        if time.time() - stale.stat().st_mtime > 600:
            stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".creating")
    os.close(fd)
    try:
        create(f"sqlite:///{tmp}")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process finished first: its database is as good
    finally:
        for leftover in (tmp, f"{tmp}-journal", f"{tmp}-wal", f"{tmp}-shm"):
            Path(leftover).unlink(missing_ok=True)
    return url


@contextmanager
def folder_written_whole(target: Path) -> Iterator[Path]:
    """A staging folder beside `target` to fill; it replaces `target` when the block ends, and
    vanishes on any error or Ctrl-C, so `target` is the old folder or the new one, never half."""
    target = Path(target)
    staging = target.with_name(f".{target.name}.building-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def serialize_sqlite_transactions(engine) -> None:
    """Make every transaction on a SQLite `engine` take the write lock first (BEGIN IMMEDIATE).

    SQLite ignores SELECT ... FOR UPDATE, so two workers could both take the same waiting
    row (an Optuna trial, a queued job). (SQLAlchemy's recipe for pysqlite transactions.)
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection, record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners existed
