"""A fresh home's MLflow database under faults: a kill during its creation, several first starts at once,
and a database half-created by an older autodata. Each start is its own process, as a user's would be."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

SETUP = (
    "from autodata.errors import AutodataError\n"
    "from autodata.settings import load_settings\n"
    "from optimizers import tracking\n"
    "try:\n"
    "    print('experiment', tracking.setup(load_settings()))\n"
    "except AutodataError as err:\n"
    "    print('error', err)\n"
)
ROOT = Path(__file__).parent.parent


def start(home: Path) -> subprocess.Popen:
    env = os.environ | {"AUTODATA_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-c", SETUP], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )


def test_a_first_start_killed_while_it_creates_the_database_starts_again(tmp_path):
    home = tmp_path / "home"
    first = start(home)
    deadline = time.monotonic() + 120
    while first.poll() is None and time.monotonic() < deadline:
        if any(p.stat().st_size > 0 for p in home.glob(".mlflow.db.*.creating")):
            first.send_signal(signal.SIGKILL)  # in the middle of MLflow's migrations
            break
        time.sleep(0.01)
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL, "the kill came too late to test anything"
    assert not (home / "mlflow.db").exists()  # never half made: only the temporary file was
    again = start(home)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0 and out.startswith("experiment "), out


def test_first_starts_together_share_one_database(tmp_path):
    home = tmp_path / "home"
    starts = [start(home) for _ in range(3)]
    outs = [p.communicate(timeout=300)[0].strip() for p in starts]
    assert all(p.returncode == 0 for p in starts) and len(set(outs)) == 1 and outs[0].startswith("experiment "), outs
    assert [p.name for p in home.glob(".mlflow.db.*")] == []


def test_a_database_half_created_in_place_is_explained_in_one_line(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    with sqlite3.connect(home / "mlflow.db") as db:  # what a migration killed midway left behind
        db.execute("CREATE TABLE _alembic_tmp_experiments (experiment_id INTEGER)")
    out, _ = start(home).communicate(timeout=300)
    assert out.startswith("error MLflow's database sqlite:///") and "half-created by an interrupted first start" in out
    assert len(out.strip().splitlines()) == 1


def test_a_creation_that_fails_midway_leaves_no_database(tmp_path):
    from autodata._io import sqlite_created_whole

    path = tmp_path / "home" / "optuna.db"

    def dies_midway(url: str) -> None:
        sqlite3.connect(url.removeprefix("sqlite:///")).execute("CREATE TABLE half (x)")
        raise KeyboardInterrupt  # Ctrl-C in the first seconds

    try:
        sqlite_created_whole(f"sqlite:///{path}", dies_midway)
    except KeyboardInterrupt:
        pass
    assert list(path.parent.iterdir()) == []  # neither a database nor its temporary file


STUDY_START = (
    "import sys\n"
    "from autodata.workqueue import WorkQueue\n"
    "from optimizers.study import open_storage\n"
    "url = sys.argv[1]\n"
    "WorkQueue(url) if sys.argv[2] == 'queue' else open_storage(url)\n"
)


def test_study_database_first_starts_together_share_one_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'home' / 'optuna.db'}"
    starts = [
        subprocess.Popen([sys.executable, "-c", STUDY_START, url, kind], cwd=ROOT, stderr=subprocess.PIPE, text=True)
        for kind in ("queue", "study", "queue", "study")
    ]
    errors = [p.communicate(timeout=300)[1] for p in starts]
    assert [p.returncode for p in starts] == [0, 0, 0, 0], errors
    with sqlite3.connect(tmp_path / "home" / "optuna.db") as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"studies", "trials", "version_info", "autodata_work"} <= tables
