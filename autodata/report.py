"""`autodata report RUN`: one self-contained HTML page about a synthesis run folder.

The page needs no network to view: inline CSS, bars drawn as plain HTML, no JavaScript. A finished
run's numbers come from its manifest.json; a run still in progress (no manifest yet) is read from
its JSONL files, with a note saying so. Every funnel number sits in an element with a stable
`data-metric="NAME"` attribute, every rejection count in one with `data-rejection="REASON"`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from html import escape
from pathlib import Path

from autodata._io import atomic_write_text
from autodata.errors import AutodataError
from autodata.items import AcceptedItem, ProgressLine, Rejection, RunManifest
from autodata.synthesis import NOT_CANDIDATES, count_candidates
from autodata.trajectory import to_sharegpt

SAMPLES = 5
RUN_FILES = ("manifest.json", "progress.jsonl", "trajectories.jsonl", "rejected.jsonl")

# The look both pages share (this one and the study's, `optimizers.study_report`); each adds its own rules.
CSS = """body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: 2px 10px; text-align: left; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.bar { background: #4a7bd0; height: 14px; min-width: 1px; } .track { width: 420px; }
.small { color: #666; font-size: .9em; }"""
RUN_CSS = """.note { background: #fff4d6; border: 1px solid #e0b84a; padding: .6em 1em; }
.hists { display: flex; flex-wrap: wrap; gap: 2em; }
.turn { border-left: 4px solid #bbb; margin: .4em 0; padding: .2em .8em; white-space: pre-wrap; }
.gpt { border-color: #4a7bd0; background: #f3f7fd; } .sample { margin: 1.2em 0; }"""


def html_page(kind: str, heading: str, name: str, sections: list[str], css: str = "") -> str:
    """A whole self-contained page about `kind` `name` ("run", "study"): text is escaped here,
    `sections` are HTML."""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>autodata {kind} {escape(name)}</title>\n'
        f"<style>\n{CSS}\n{css}\n</style></head><body>\n<h1>{escape(heading)} <code>{escape(name)}</code></h1>\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )


@dataclass
class _Run:
    manifest: RunManifest | None  # None: the run is not finished
    items: list[AcceptedItem]
    rejections: list[Rejection]
    progress: list[ProgressLine]
    conversations: list[dict]  # sft_dataset.json rows (ShareGPT)


def run_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the HTML page of the run in `run_dir` to `out` (default RUN/report.html); returns its path."""
    run_dir = Path(run_dir)
    run = _load(run_dir)
    sections = [
        _header(run_dir, run),
        _funnel(run),
        _rejections(run),
        _coverage(run),
        _llm(run),
        _histograms(run),
        _samples(run),
    ]
    out = Path(out) if out is not None else run_dir / "report.html"
    atomic_write_text(out, html_page("run", "Synthesis run", run_dir.name, sections, RUN_CSS))
    return out


def _load(run_dir: Path) -> _Run:
    if not run_dir.is_dir() or not any((run_dir / name).is_file() for name in RUN_FILES):
        raise AutodataError(
            f"{run_dir} holds no synthesis run (no manifest.json or progress.jsonl): "
            f"run `autodata synthesize --out {run_dir}` first, or name the folder it wrote."
        )
    manifest = None
    if (run_dir / "manifest.json").is_file():
        try:
            manifest = RunManifest.read(run_dir / "manifest.json")
        except ValueError as err:
            raise AutodataError(
                f"{run_dir / 'manifest.json'} does not read as a run manifest ({str(err).splitlines()[0]}): "
                f"run `autodata synthesize --out {run_dir}` again to rewrite it."
            ) from err
    progress = list(ProgressLine.read(run_dir / "progress.jsonl"))
    done = {line.seed_id for line in progress}  # lines of seeds still in flight are not counted yet
    items = [item for item in AcceptedItem.read(run_dir / "trajectories.jsonl") if item.seed_id in done]
    rejections = [row for row in Rejection.read(run_dir / "rejected.jsonl") if row.seed_id in done]
    sft = run_dir / "sft_dataset.json"
    conversations = json.loads(sft.read_text(encoding="utf-8")) if manifest and sft.is_file() else []
    return _Run(manifest, items, rejections, progress, conversations)


def _rejection_counts(run: _Run) -> dict[str, int]:
    return dict(run.manifest.rejections) if run.manifest else dict(Counter(row.reason for row in run.rejections))


def bars(rows: list[tuple], attr: str | None = None, head: str = "", fmt: str = "g") -> str:
    """A table of horizontal bars, a row per (label, value[, key]) (a value None shows as "-"),
    numbers in `fmt`; `attr` puts `data-ATTR="KEY"` (default: the label) on each number."""
    top = max((row[1] or 0 for row in rows), default=0) or 1
    lines = []
    for label, value, *key in rows:
        data = f' data-{attr}="{escape((key or [label])[0])}"' if attr else ""
        lines.append(
            f'<tr><td>{escape(label)}</td><td class="n"{data}>{"-" if value is None else format(value, fmt)}</td>'
            f'<td class="track"><div class="bar" style="width:{100 * (value or 0) / top:.1f}%"></div></td></tr>'
        )
    return f"<table>{head}{''.join(lines)}</table>" if lines else '<p class="small">none</p>'


def _header(run_dir: Path, run: _Run) -> str:
    m = run.manifest
    if m is None:
        return (
            '<p class="note" id="unfinished"><b>This run is not finished</b> (no manifest.json yet): the numbers '
            f"below count the {len(run.progress)} seeds done so far, read from the JSONL files. "
            "Run the report again when <code>autodata synthesize</code> has finished.</p>"
        )
    facts = {
        "recipe": f"{m.recipe_name} ({m.recipe_source}, {m.recipe_hash})",
        "dataset version": m.dataset_version,
        "acceptance rule": m.acceptance_rule,
        "hint / weak mode": f"{m.hint_mode} / {m.weak_mode}",
        "acceptance rate (per candidate)": f"{m.acceptance_rate:.1%}",
        "accepted per seed with evidence": f"{m.accepted_per_seed_with_evidence:g}",
        "autodata": m.autodata_version,
    }
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in facts.items())
    return f'<p class="small">{escape(str(run_dir))}</p><table>{rows}</table>'


def _funnel(run: _Run) -> str:
    rejections = _rejection_counts(run)
    not_candidates = sum(rejections.get(reason, 0) for reason in NOT_CANDIDATES)
    if m := run.manifest:  # the manifest's numbers
        seeds, evidence, accepted, in_datasets = (
            m.seeds.total,
            m.seeds.with_evidence,
            m.items.accepted,
            m.items.in_datasets,
        )
    else:
        seeds, accepted, in_datasets = len(run.progress), len(run.items), None
        evidence = seeds - not_candidates
    candidates = count_candidates(accepted, rejections)
    steps = [
        ("seeds" if run.manifest else "seeds done so far", seeds, "seeds"),
        ("seeds with evidence", evidence, "seeds_with_evidence"),
        ("candidate questions checked", candidates, "candidates"),
        ("accepted items", accepted, "accepted"),
        ("items in the datasets (sft_dataset.json)", in_datasets, "in_datasets"),
    ]
    return f"<h2>Funnel</h2>{bars(steps, attr='metric')}"


def _rejections(run: _Run) -> str:
    counts = sorted(_rejection_counts(run).items(), key=lambda kv: -kv[1])
    return f"<h2>Rejection reasons</h2>{bars(counts, attr='rejection')}"


def _coverage(run: _Run) -> str:
    """Accepted items by strategy and hops (rows) and task type (columns)."""
    cells = Counter(
        (f"{i.strategy}, {i.hops} hop{'s' * (i.hops != 1)}", i.tags.task_type or "(untagged)") for i in run.items
    )
    rows, cols = sorted({r for r, _ in cells}), sorted({c for _, c in cells})
    top = max(cells.values(), default=1)
    head = "".join(f'<th class="n">{escape(c)}</th>' for c in cols)
    body = "".join(
        f"<tr><th>{escape(r)}</th>"
        + "".join(
            f'<td class="n" style="background:rgba(74,123,208,{cells[r, c] / top * 0.6:.2f})">{cells[r, c] or ""}</td>'
            for c in cols
        )
        + f'<td class="n">{sum(cells[r, c] for c in cols)}</td></tr>'
        for r in rows
    )
    table = f'<table><tr><th>strategy, hops \\ task type</th>{head}<th class="n">all</th></tr>{body}</table>'
    note = (
        '<p class="small">Counts of accepted items (the manifest\'s by_* counts are of the items in the datasets).</p>'
    )
    return f"<h2>Mix: strategy, hops and task type</h2>{table if rows else '<p>none</p>'}{note}"


def _llm(run: _Run) -> str:
    if run.manifest:
        per_item = {role: cost.model_dump() for role, cost in run.manifest.llm_per_accepted_item.items()}
    else:
        totals: dict[str, Counter] = {}
        for line in run.progress:
            for role, cost in line.cost.items():
                totals.setdefault(role, Counter()).update(cost.model_dump())
        n = len(run.items)
        per_item = {role: {k: v / n for k, v in c.items()} for role, c in totals.items()} if n else {}
    head = "<tr><th>role</th>" + "".join(
        f'<th class="n">{h}</th>' for h in ("calls", "prompt tokens", "completion tokens")
    )
    rows = "".join(
        f'<tr><td>{escape(role)}</td><td class="n">{c["calls"]:.2f}</td>'
        f'<td class="n">{c["prompt_tokens"]:.1f}</td><td class="n">{c["completion_tokens"]:.1f}</td></tr>'
        for role, c in per_item.items()
    )
    total = sum(c["calls"] for c in per_item.values())
    return (
        f"<h2>LLM calls and tokens per accepted item, by role</h2><table>{head}</tr>{rows}"
        f'<tr><th>all roles</th><th class="n">{total:.2f}</th></tr></table>'
        '<p class="small">All calls of the run (rejected candidates included) divided by the accepted items.</p>'
    )


def _histogram(title: str, unit: str, values: list[int], bins: int = 8) -> str:
    if not values:
        return f"<div><h3>{title}</h3><p>none</p></div>"
    low, high = min(values), max(values)
    width = max(1, -(-(high - low + 1) // bins))  # integer bins, at most `bins` of them
    counts = Counter((v - low) // width for v in values)
    rows = [
        (f"{low + b * width}" if width == 1 else f"{low + b * width}-{low + (b + 1) * width - 1}", counts[b])
        for b in range((high - low) // width + 1)
    ]
    head = f'<tr><th>{unit}</th><th class="n">items</th></tr>'
    return f"<div><h3>{title}</h3>{bars(rows, head=head)}</div>"


def _histograms(run: _Run) -> str:
    trajectories = [sum(len(turn["value"]) for turn in to_sharegpt(i.trajectory)["conversations"]) for i in run.items]
    charts = [
        _histogram("question length", "words", [len(i.question.split()) for i in run.items]),
        _histogram("answer length", "words", [len(i.answer.split()) for i in run.items]),
        _histogram("trajectory length", "characters", trajectories),
        _histogram("searches per item", "searches", [len(i.trajectory.searches) for i in run.items]),
    ]
    note = (
        '<p class="small">Accepted items. Trajectory length: characters of the rendered conversation '
        "the student trains on, all turns (prompt and retrieved passages included).</p>"
    )
    return f'<h2>Lengths</h2><div class="hists">{"".join(charts)}</div>{note}'


def _conversation(row: dict) -> str:
    turns = []
    for turn in row["conversations"]:
        text = escape(turn["value"])
        if turn["from"] != "gpt" and turn["value"].startswith("<information>"):
            text = f"<details><summary>retrieved passages ({len(turn['value'])} characters)</summary>{text}</details>"
        turns.append(f'<div class="turn {escape(turn["from"])}"><b>{escape(turn["from"])}</b>\n{text}</div>')
    return f'<div class="sample">{"".join(turns)}</div>'


def _samples(run: _Run) -> str:
    rows = run.conversations or [to_sharegpt(item.trajectory) for item in run.items]
    source = "sft_dataset.json" if run.conversations else "trajectories.jsonl (no datasets yet)"
    accepted = "".join(_conversation(row) for row in rows[:SAMPLES]) or "<p>none</p>"
    rejected = "".join(
        f"<tr><td>{escape(r.seed_id)}</td><td>{escape(r.strategy or '-')}</td><td>{escape(r.reason)}</td>"
        f"<td>{escape(r.detail)}</td><td>{escape(r.question or '-')}</td><td>{escape(r.answer or '-')}</td></tr>"
        for r in [r for r in run.rejections if r.reason not in NOT_CANDIDATES][:SAMPLES]
    )
    head = "<tr><th>seed</th><th>strategy</th><th>reason</th><th>detail</th><th>question</th><th>answer</th></tr>"
    return (
        f'<h2>Sample accepted items</h2><p class="small">As the student trains on them, from {source}.</p>{accepted}'
        f"<h2>Sample rejected candidates</h2><table>{head}{rejected}</table>"
    )
