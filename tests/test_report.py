"""`autodata.report.run_report`: the HTML page of a run folder, on copies of the golden runs."""

import json
import re
import shutil
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from autodata.errors import AutodataError
from autodata.report import run_report
from tests.infra import CHROMIUM_FLAGS, artifact

GOLDEN = Path(__file__).parent / "fixtures" / "golden_run"
RUNS = ("default", "rephrase", "multi_hop")
VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "embed", "source", "track", "wbr"}


def golden_copy(tmp_path: Path, name: str = "default") -> Path:
    """A copy of a golden run as `autodata synthesize` left it (its whole manifest as manifest.json)."""
    run = tmp_path / name
    shutil.copytree(GOLDEN / name, run)
    (run / "manifest.json").write_bytes((run / "run_manifest.json").read_bytes())
    (run / "run_manifest.json").unlink()
    return run


class DataAttributes(HTMLParser):
    """The text of every element with a `data-NAME` attribute, as {NAME: {value: text}}."""

    def __init__(self):
        super().__init__()
        self.found: dict[str, dict[str, str]] = {}
        self._open: list[tuple[str, str] | None] = []

    def handle_starttag(self, tag, attrs):
        if tag in VOID:
            return
        data = [(k[5:], v) for k, v in attrs if k.startswith("data-")]
        self._open.append(data[0] if data else None)
        if data:
            self.found.setdefault(data[0][0], {})[data[0][1]] = ""

    def handle_endtag(self, tag):
        if tag not in VOID and self._open:
            self._open.pop()

    def handle_data(self, text):
        if self._open and self._open[-1]:
            name, value = self._open[-1]
            self.found[name][value] += text


def data_attributes(page: str) -> dict[str, dict[str, str]]:
    parser = DataAttributes()
    parser.feed(page)
    return parser.found


def manifest_funnel(run: Path) -> dict[str, str]:
    m = json.loads((run / "manifest.json").read_text())
    not_candidates = sum(m["rejections"].get(r, 0) for r in ("no_evidence", "contaminated_seed"))
    numbers = {
        "seeds": m["seeds"]["total"],
        "seeds_with_evidence": m["seeds"]["with_evidence"],
        "candidates": m["items"]["accepted"] + m["items"]["rejected_candidates"] - not_candidates,
        "accepted": m["items"]["accepted"],
        "in_datasets": m["items"]["in_datasets"],
    }
    return {k: str(v) for k, v in numbers.items()}


@pytest.mark.parametrize("name", RUNS)
def test_the_funnel_numbers_are_the_manifests(tmp_path, name):
    run = golden_copy(tmp_path, name)
    page = run_report(run)
    assert page == run / "report.html"
    funnel = data_attributes(page.read_text())["metric"]
    assert funnel == manifest_funnel(run)
    assert funnel["in_datasets"] == str(len(json.loads((run / "sft_dataset.json").read_text())))


@pytest.mark.parametrize("name", RUNS)
def test_the_rejection_counts_are_a_count_over_rejected_jsonl(tmp_path, name):
    run = golden_copy(tmp_path, name)
    reasons = Counter(json.loads(line)["reason"] for line in (run / "rejected.jsonl").read_text().splitlines())
    shown = data_attributes(run_report(run).read_text())["rejection"]
    assert {reason: int(count) for reason, count in shown.items()} == dict(reasons)


def test_the_page_references_nothing_on_the_network(tmp_path):
    run = golden_copy(tmp_path)
    page = run_report(run, tmp_path / "elsewhere" / "page.html").read_text()
    assert (tmp_path / "elsewhere" / "page.html").is_file() and not (run / "report.html").exists()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "@import" not in page and "url(" not in page and "<script" not in page.lower()


def test_user_text_is_escaped(tmp_path):
    run = golden_copy(tmp_path)
    evil = "<script>alert(1)</script>"
    for name in ("trajectories.jsonl", "rejected.jsonl"):
        rows = [json.loads(line) for line in (run / name).read_text().splitlines()]
        rows[-1]["question"] = f"Who {evil} wrote it?"
        (run / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    sft = json.loads((run / "sft_dataset.json").read_text())
    sft[0]["conversations"][0]["value"] += evil
    (run / "sft_dataset.json").write_text(json.dumps(sft))
    page = run_report(run).read_text()
    assert "<script" not in page.lower()
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 2  # the sample conversation and the rejection


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_no_run_folder_is_an_error_and_writes_nothing(tmp_path, make):
    run = tmp_path / "run"
    if make == "empty":
        run.mkdir()
    with pytest.raises(AutodataError, match=r"autodata synthesize --out") as err:
        run_report(run)
    assert str(run) in str(err.value) and "\n" not in str(err.value)
    assert list(tmp_path.rglob("*")) == ([run] if make == "empty" else [])


def test_an_unfinished_run_renders_from_the_jsonl_files_with_a_note(tmp_path):
    run = golden_copy(tmp_path)
    finished = data_attributes(run_report(run).read_text())
    for name in ("manifest.json", "sft_dataset.json", "dataset_info.json", "midtrain.jsonl", "report.html"):
        (run / name).unlink()
    page = run_report(run).read_text()
    assert 'id="unfinished"' in page and "not finished" in page
    shown = data_attributes(page)
    # every seed of the golden run is done: the JSONL files count what the manifest counted
    assert {k: v for k, v in shown["metric"].items() if k != "in_datasets"} == {
        k: v for k, v in finished["metric"].items() if k != "in_datasets"
    }
    assert shown["metric"]["in_datasets"] == "-" and shown["rejection"] == finished["rejection"]
    assert "<details>" in page  # the samples are rendered from trajectories.jsonl


def test_a_finished_run_has_no_unfinished_note(tmp_path):
    page = run_report(golden_copy(tmp_path)).read_text()
    assert 'id="unfinished"' not in page and "<details>" in page


@pytest.mark.slow
def test_the_page_renders_in_headless_chromium(tmp_path):
    run = golden_copy(tmp_path)  # the default recipe's run: accepted items to show in the screenshot
    page = run_report(run)
    chromium = shutil.which("chromium") or pytest.fail("Debian's chromium is not installed: apt-get install chromium")
    flags = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180, check=True
    ).stdout
    assert data_attributes(dom)["metric"] == manifest_funnel(run)
    shot = artifact("run-report.png")
    shot.unlink(missing_ok=True)
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri()],
        capture_output=True,
        timeout=180,
        check=True,
    )
    assert shot.stat().st_size > 0 and shot.read_bytes().startswith(b"\x89PNG")


def test_the_cli_writes_the_page_and_says_where(tmp_path, capsys):
    from autodata.cli import main

    run = golden_copy(tmp_path)
    assert main(["report", str(run), "--out", str(tmp_path / "page.html")]) == 0
    assert capsys.readouterr().out.startswith(f"Wrote {tmp_path / 'page.html'}")
    assert (tmp_path / "page.html").read_text().startswith("<!DOCTYPE html>")
    assert main(["report", str(tmp_path / "nowhere")]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_synthesis_with_mlflow_logs_its_counts_and_page(scripted_roles, tmp_path, capsys):
    from mlflow import MlflowClient

    from autodata.cli import main
    from autodata.settings import load_settings
    from optimizers import tracking

    out = tmp_path / "run"
    assert main(["synthesize", "--out", str(out), "--mlflow"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    experiment_id = tracking.setup(load_settings())
    (run,) = MlflowClient().search_runs([experiment_id], "tags.`autodata.kind` = 'synthesis'")
    assert (
        f"Logged to MLflow ({load_settings().effective_tracking_uri}): run {run.info.run_id}" in capsys.readouterr().out
    )
    assert run.data.metrics["accepted_items"] == manifest["items"]["accepted"] > 0
    assert run.data.params["recipe_hash"] == manifest["recipe_hash"]
    logged = {a.path for a in MlflowClient().list_artifacts(run.info.run_id)}
    assert {"report.html", "manifest.json", "sample_trajectories.jsonl", "recipe"} <= logged
    page = MlflowClient().download_artifacts(run.info.run_id, "report.html", str(tmp_path / "got"))
    assert data_attributes(Path(page).read_text())["metric"] == manifest_funnel(out)
