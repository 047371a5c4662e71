"""Real servers for the slow tests, on loopback: PostgreSQL (Debian's package) and `mlflow server`."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from autodata.search.server import free_port

# Debian's headless Chromium: without the networking flags it keeps calling Google's hosts, which this closed
# network refuses.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, exited but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # the state follows the "(name)", which may hold spaces


def artifact(name: str) -> Path:
    """Where a slow test keeps what people look at after the run (the pages' screenshots): the folder
    $AUTODATA_TEST_ARTIFACTS, by default test-artifacts/ in the checkout (ignored by git; CI lists it)."""
    folder = Path(os.environ.get("AUTODATA_TEST_ARTIFACTS") or Path(__file__).parents[1] / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def wait_for(url: str, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{what} did not answer {url} within {timeout_s} s")


@contextmanager
def postgres(*databases: str):
    """A throwaway PostgreSQL cluster on a free loopback port (trust auth); yields a SQLAlchemy
    URL prefix, `postgresql+psycopg://postgres@127.0.0.1:PORT`, with `databases` created."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed: apt-get install postgresql (.ci/run does)")
    bindir = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="autodata-pg-"))
    root.chmod(0o755)
    data, log = root / "data", root / "server.log"
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses to run as root
    if as_postgres:
        shutil.chown(root, "postgres")
    port = free_port()
    try:
        subprocess.run(
            [*as_postgres, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *as_postgres,
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-o",
                f"-p {port} -h 127.0.0.1 -k {root}",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        for database in databases:
            subprocess.run(
                [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database],
                check=True,
                capture_output=True,
            )
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def mlflow_server(backend_uri: str, artifacts: Path):
    """`mlflow server` with served artifacts in `artifacts`; yields its URL."""
    port = free_port()
    # LiteLLM (imported by MLflow's job registry) deadlocks on its network cost-map fetch without this.
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "true"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            backend_uri,
            "--artifacts-destination",
            str(artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/health", "mlflow server")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
