"""The inner loop on the demo world with the embedded model (slow: minutes)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from autodata.answers import sub_exact_match
from autodata.recipe import Recipe
from autodata.roles import Expected, check_trajectory
from autodata.search import BM25Index
from autodata.trajectory import Trajectory, sharegpt_problems

pytestmark = pytest.mark.slow
SEEDS = "30"


def autodata(home, *args, **kwargs):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTODATA_")} | {"AUTODATA_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "autodata.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def finish(process, timeout=900):
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def expected(item: dict) -> Expected:
    """What the default recipe's kept trajectory for `item` had to show."""
    hops = tuple(item["passage_ids"]) if item["hops"] == 2 else ()
    return Expected.fact(item["answer"], bridge=item["bridge"], hop_passages=hops)


def test_embedded_world_accepts_grounded_items_and_resumes_after_a_kill(tmp_path):
    straight_home, killed_home = tmp_path / "a", tmp_path / "b"
    for home in (straight_home, killed_home):
        assert finish(autodata(home, "world", "prepare"))[0] == 0

    code, out = finish(autodata(straight_home, "synthesize", "--limit", SEEDS, "--out", str(tmp_path / "straight")))
    straight = tmp_path / "straight"
    accepted = read_jsonl(straight / "trajectories.jsonl")
    # exit 1 says "accepted nothing" (a small yield can be 0 in 30 seeds); anything else is a failure
    assert code == 0 if accepted else (code == 1 and "the recipe accepted nothing" in out), out
    # The 135M model's yield under the grounded-thought and support rules is small and not
    # measured yet (README, Status): what it keeps must pass every rule, whatever it keeps.
    print(f"embedded yield: {len(accepted)} accepted of {SEEDS} seeds")
    assert len(read_jsonl(straight / "progress.jsonl")) == int(SEEDS), out
    index = BM25Index.load(straight_home / "world" / "index")
    for item in accepted:  # every verification rule, hint_leak and bad_thought included, holds for what was kept
        trajectory = Trajectory.model_validate(item["trajectory"])
        assert check_trajectory(trajectory, expected(item), index, Recipe().search) is None
        first_seen = next(
            i
            for i, s in enumerate(trajectory.steps)
            if getattr(s, "observation", None) and sub_exact_match(s.observation, [item["answer"]])
        )
        for step in trajectory.steps[: first_seen + 1]:  # nothing before the evidence knows the answer
            assert not sub_exact_match(step.think + " " + getattr(step, "query", ""), [item["answer"]]), item["id"]
    sft = json.loads((straight / "sft_dataset.json").read_text())
    manifest = json.loads((straight / "manifest.json").read_text())
    assert len(sft) == manifest["items"]["in_datasets"] and all(sharegpt_problems(e) == [] for e in sft)
    assert manifest["items"]["accepted"] == len(accepted)
    assert sum(manifest["rejections"].values()) == len(read_jsonl(straight / "rejected.jsonl"))
    assert manifest["hint_mode"] == "answer"

    killed = tmp_path / "killed"
    job = autodata(killed_home, "synthesize", "--limit", SEEDS, "--out", str(killed), start_new_session=True)
    deadline = time.monotonic() + 600
    while len(read_jsonl(killed / "progress.jsonl")) < 8 and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.5)
    os.killpg(job.pid, signal.SIGKILL)  # the job and its model server, mid-run
    job.wait()
    done_before = len(read_jsonl(killed / "progress.jsonl"))
    assert 0 < done_before < int(SEEDS)
    code, out = finish(autodata(killed_home, "synthesize", "--limit", SEEDS, "--out", str(killed)))
    assert code == (0 if accepted else 1), out
    resumed = read_jsonl(killed / "trajectories.jsonl")
    assert sorted(i["id"] for i in resumed) == sorted(i["id"] for i in accepted)
    assert len(read_jsonl(killed / "progress.jsonl")) == int(SEEDS)
