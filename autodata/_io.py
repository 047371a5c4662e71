"""Small file helpers: every file autodata writes appears whole or not at all."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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


def atomic_write_jsonl(path: Path, rows: Iterable[dict], *, fsync: bool = False) -> None:
    atomic_write_lines(path, (json.dumps(r, ensure_ascii=False) + "\n" for r in rows), fsync=fsync)


def iter_jsonl(path: Path, *, missing_ok: bool = False) -> Iterator[dict]:
    """The records of a JSONL file autodata appends to, one line at a time (blank lines skipped).

    A torn last line (a crash in the middle of a write) ends the records: whatever was on it is
    work to do again. A file that does not exist has no records when `missing_ok`.
    """
    if missing_ok and not Path(path).is_file():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                return


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
