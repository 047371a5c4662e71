"""A run folder written before the records were models reads through them and writes again byte for byte."""

import json
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from autodata._io import atomic_write_json
from autodata.errors import DamagedFileError
from autodata.items import AcceptedItem, ProgressLine, Record, Rejection, RunManifest
from autodata.trajectory import Trajectory

GOLDEN = Path(__file__).parent / "fixtures" / "golden_run"
RUNS = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())
FILES: dict[str, type[Record]] = {
    "trajectories.jsonl": AcceptedItem,
    "rejected.jsonl": Rejection,
    "progress.jsonl": ProgressLine,
}


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("name", FILES)
def test_old_run_files_read_through_the_records_and_write_back_identical(run, name):
    path = GOLDEN / run / name
    records = list(FILES[name].read(path))
    assert len(records) == len(path.read_text(encoding="utf-8").splitlines())
    assert "".join(record.line() for record in records) == path.read_text(encoding="utf-8")
    for record, line in zip(records, path.read_text(encoding="utf-8").splitlines(), strict=True):
        assert list(record.model_dump()) == list(json.loads(line))  # field order as written


@pytest.mark.parametrize("run", RUNS)
def test_a_whole_old_manifest_reads_through_the_model_and_writes_back_identical(run, tmp_path):
    path = GOLDEN / run / "run_manifest.json"
    manifest = RunManifest.read(path)
    assert manifest.record() == json.loads(path.read_text(encoding="utf-8"))
    atomic_write_json(tmp_path / "manifest.json", manifest.record())  # as `finalize` writes it
    assert (tmp_path / "manifest.json").read_bytes() == path.read_bytes()


def test_the_golden_runs_hold_every_kind_of_record():
    """The fixtures exercise what the models must keep: items, nulls, rejections of a seed and of a round."""
    items = [i for run in RUNS for i in AcceptedItem.read(GOLDEN / run / "trajectories.jsonl")]
    rejections = [r for run in RUNS for r in Rejection.read(GOLDEN / run / "rejected.jsonl")]
    assert items and all(isinstance(i.trajectory, Trajectory) and i.bridge is None for i in items)
    assert {"no_evidence", "invalid", "too_hard"} <= {r.reason for r in rejections}
    seed_level = [r for r in rejections if r.reason == "no_evidence"]
    assert seed_level and all(r.round is None and r.strategy is None and r.question is None for r in seed_level)
    assert '"round": null, "strategy": null' in seed_level[0].line()


def test_a_record_that_does_not_fit_is_an_error_not_a_dropped_field(tmp_path):
    row = json.loads((GOLDEN / "default" / "rejected.jsonl").read_text().splitlines()[0])
    with pytest.raises(ValidationError, match="extra"):
        Rejection.model_validate({**row, "written_by_someone_else": 1})
    with pytest.raises(ValidationError):
        Rejection.model_validate({**row, "reason": "not_a_reason"})
    with pytest.raises(ValidationError):
        ProgressLine.model_validate({"seed_id": "s1", "accepted": 1, "rejected": 0, "cost": {"weak": {"calls": 1}}})


def test_reading_stops_at_a_torn_last_line_and_a_missing_file_has_no_records(tmp_path):
    lines = (GOLDEN / "default" / "progress.jsonl").read_text().splitlines(keepends=True)
    path = tmp_path / "progress.jsonl"
    path.write_text("".join(lines[:2]) + '{"seed_id": "s3", "acc')  # a crash in the middle of a write
    assert [row.seed_id for row in ProgressLine.read(path)] == ["s1", "s2"]
    assert list(ProgressLine.read(tmp_path / "nowhere.jsonl")) == []


def test_a_damaged_line_with_records_after_it_is_an_error_with_its_line(tmp_path):
    lines = (GOLDEN / "default" / "progress.jsonl").read_text().splitlines(keepends=True)
    path = tmp_path / "progress.jsonl"
    path.write_text("".join([lines[0], "\n", '{"seed_id": "s2", "acc\n', *lines[1:3], "\n"]))
    with pytest.raises(DamagedFileError, match=r"progress.jsonl, line 3: .* and 2 more line\(s\) follow it"):
        list(ProgressLine.read(path))


def test_a_rejection_written_before_the_fields_it_lacks_still_reads():
    """Older rejection lines (and those test_synthesis writes) may hold only seed, reason and detail."""
    row = Rejection.model_validate({"seed_id": "old1", "reason": "too_hard", "detail": "x"})
    assert (row.round, row.strategy, row.question, row.answer, row.recipe_hash) == (None, None, None, None, None)


@pytest.mark.parametrize("run", RUNS)
def test_resuming_an_old_run_folder_rewrites_its_lines_byte_for_byte(run, tmp_path):
    from autodata.recipe import Recipe
    from autodata.synthesis import _Output, run_totals

    out = tmp_path / "run"
    shutil.copytree(GOLDEN / run, out)
    seeds = tmp_path / "seeds.json"
    seeds.write_text("[]")
    output = _Output(out, Recipe(), seeds, "default")
    (out / "run.json").write_text(json.dumps(output.run_info))  # the folder as this recipe's run
    done = output.open()  # keeps the lines of finished seeds (all of them), through the records
    progress = [row.seed_id for row in ProgressLine.read(GOLDEN / run / "progress.jsonl")]
    assert done == set(progress) and run_totals(out)["seeds_done"] == len(progress)
    for name in FILES:
        assert (out / name).read_bytes() == (GOLDEN / run / name).read_bytes(), name
