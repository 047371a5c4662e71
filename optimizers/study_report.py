"""`autodata report --study NAME`: one self-contained HTML page about a recipe-optimization study.

Like the run report (`autodata/report.py`) it needs no network to view: inline CSS, charts drawn here
as inline SVG, no JavaScript. Each trial's row sits in an element with `data-trial="N"`, its score
cell has `data-score` (the row's score as Python writes it, or "-").
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Callable
from html import escape
from pathlib import Path
from urllib.parse import quote

import optuna

from autodata._io import atomic_write_text
from autodata.report import bars, html_page
from optimizers import tracking
from optimizers.study import BASELINE_PARAMS, TrialRow, open_storage, study_table

STUDY_CSS = """tr.best { background: #e6f4e1; } .gain { color: #1a7f37; font-weight: bold; }
pre { background: #f6f8fa; padding: .6em 1em; overflow-x: auto; } .add { color: #1a7f37; } .del { color: #b3261e; }"""


def study_report(
    name: str,
    storage: str,
    out: Path,
    *,
    runs_dir: Path | None = None,
    prompt_text: Callable[[str, int], str] | None = None,
) -> Path:
    """Write the HTML page of study `name` to `out`; returns `out`. An unknown study raises AutodataError.

    `runs_dir`: the study's synthesis folders (`optimizers.study.runs_dir`), to link each trial's run
    report; `prompt_text(role, version)`: a prompt's text (default: from the MLflow prompt registry,
    which needs `tracking.setup` done; it is asked only for the versions the best trial changed)."""
    rows, best = study_table(name, storage)
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    out = Path(out)
    body = [
        _trials(rows, best, runs_dir, out.parent),
        _history(rows),
        _importances(study),
        _prompts(rows, best, prompt_text or tracking.load_prompt_version),
    ]
    atomic_write_text(out, html_page("study", "Recipe-optimization study", name, body, STUDY_CSS))
    return out


def _num(value: float | None, fmt: str = ".3f") -> str:
    """`value` formatted ("r": its repr, exact), or "-" where there is none."""
    return "-" if value is None else repr(value) if fmt == "r" else format(value, fmt)


def _trials(rows: list[TrialRow], best: TrialRow | None, runs_dir: Path | None, here: Path) -> str:
    head = "".join(
        f"<th>{h}</th>"
        for h in ("trial", "state", "score [95%]", "vs trial 0 [95%]", "recipe", "accepted", "calls/item")
        + ("changes from the default recipe", "run report", "")
    )
    lines = []
    for r in rows:
        score = _num(r.score) + (
            f" [{r.score_interval.low:.3f}, {r.score_interval.high:.3f}]" if r.score_interval else ""
        )
        if r.trial == 0:
            delta = "the default recipe"
        elif d := r.delta_vs_default:
            delta = f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]" + (
                ' <span class="gain">gain</span>' if d.low > 0 else ""
            )
        else:
            delta = "-"
        changes = ", ".join(f"{k}={v}" for k, v in r.params.items() if BASELINE_PARAMS.get(k) != v) or "none"
        mark = "best" if best and r.trial == best.trial else "Pareto front" if r.pareto else ""
        best_class = ' class="best"' if mark == "best" else ""
        lines.append(
            f'<tr data-trial="{r.trial}"{best_class}><td class="n">{r.trial}</td>'
            f'<td>{escape(r.state)}</td><td class="n" data-score="{_num(r.score, "r")}">{score}</td>'
            f'<td class="n">{delta}</td><td><code>{escape(r.recipe_hash or "-")}</code></td>'
            f'<td class="n">{_num(r.accepted, "d")}</td><td class="n">{_num(r.calls_per_item, ".1f")}</td>'
            f"<td>{escape(changes)}</td><td>{_report_link(r, runs_dir, here)}</td><td><b>{mark}</b></td></tr>"
        )
    note = (
        '<p class="small">Scores with their 95% intervals; "vs trial 0" is the paired difference from the default '
        "recipe on the same questions. A gain counts only where the interval of that difference lies above 0 "
        "(marked <b>gain</b>); a higher score whose interval reaches 0 or below may be chance.</p>"
    )
    return f"<h2>Trials</h2><table><tr>{head}</tr>{''.join(lines)}</table>{note}"


def _report_link(row: TrialRow, runs_dir: Path | None, here: Path) -> str:
    """A relative link to the trial's run report (`autodata report RUN`, or the copy a trial logs), if written."""
    folder = Path(runs_dir) / row.recipe_hash if runs_dir and row.recipe_hash else None
    found = folder and next(
        (p for p in (folder / "report.html", folder / "mlflow" / "report.html") if p.is_file()), None
    )
    if not found:
        return '<span class="small">no report yet</span>'
    href = quote(Path(os.path.relpath(found.resolve(), here.resolve())).as_posix())
    return f'<a href="{escape(href)}">run report</a>'


def _history(rows: list[TrialRow]) -> str:
    """Score per trial number (points, intervals as error bars) and the running best (a step line)."""
    scored = [r for r in rows if r.score is not None]
    if not scored:
        return "<h2>Optimization history</h2><p>No trial has a score yet.</p>"
    width, height, pad = 640, 240, 40
    ys = [
        v
        for r in scored
        for v in (r.score, *((r.score_interval.low, r.score_interval.high) if r.score_interval else ()))
    ]
    low, high = min(ys), max(ys)
    low, high = (low - 0.5, high + 0.5) if low == high else (low, high)
    last = max(r.trial for r in rows) or 1

    def x(n: int) -> float:
        return pad + (width - 2 * pad) * n / last

    def y(v: float) -> float:
        return height - pad - (height - 2 * pad) * (v - low) / (high - low)

    marks, steps, top = [], [], None
    for r in scored:
        if r.score_interval:
            marks.append(
                f'<line x1="{x(r.trial):.1f}" x2="{x(r.trial):.1f}" y1="{y(r.score_interval.low):.1f}" '
                f'y2="{y(r.score_interval.high):.1f}" stroke="#999"/>'
            )
        marks.append(
            f'<circle cx="{x(r.trial):.1f}" cy="{y(r.score):.1f}" r="4" fill="#4a7bd0">'
            f"<title>trial {r.trial}: {r.score:.3f}</title></circle>"
        )
        if r.state == "COMPLETE":  # the step: across at the best so far, then up to a new best
            steps += [] if top is None else [f"{x(r.trial):.1f},{y(top):.1f}"]
            top = r.score if top is None else max(top, r.score)
            steps.append(f"{x(r.trial):.1f},{y(top):.1f}")
    axes = (
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#444"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#444"/>'
        f'<text x="{pad - 4}" y="{y(high) + 4:.1f}" text-anchor="end" font-size="11">{high:.3g}</text>'
        f'<text x="{pad - 4}" y="{y(low) + 4:.1f}" text-anchor="end" font-size="11">{low:.3g}</text>'
        f'<text x="{pad}" y="{height - pad + 16}" font-size="11">0</text>'
        f'<text x="{width - pad}" y="{height - pad + 16}" text-anchor="end" font-size="11">trial {last}</text>'
    )
    best_line = f'<polyline points="{" ".join(steps)}" fill="none" stroke="#1a7f37" stroke-dasharray="4 3"/>'
    svg = f'<svg width="{width}" height="{height}">{axes}{best_line}{"".join(marks)}</svg>'
    note = (
        '<p class="small">Points: scores by trial number, grey bars their 95% intervals; dashed: the running best.</p>'
    )
    return f"<h2>Optimization history</h2>{svg}{note}"


def _importances(study: optuna.Study) -> str:
    """Optuna's parameter importances for the score. Optuna 5's evaluator (PED-ANOVA) does not raise when
    trials are too few or all alike: it warns and returns equal importances; so that case is told apart here."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    names = {k for t in complete for k in t.params}
    varying = any(len({repr(t.params.get(k)) for t in complete}) > 1 for k in names)
    if len(complete) < 2 or not varying:
        return (
            "<h2>Parameter importances</h2><p>Not enough trials: importances need at least 2 complete trials "
            "whose parameters differ.</p>"
        )
    with warnings.catch_warnings():  # "computes the importances ... low target values": hence the minus
        warnings.simplefilter("ignore", UserWarning)
        target = (lambda t: -t.values[0]) if len(study.directions) > 1 else None
        importances = optuna.importance.get_param_importances(study, target=target)
    shares = sorted(importances.items(), key=lambda kv: -kv[1])
    note = (
        f'<p class="small">Optuna\'s estimate from {len(complete)} complete trials (shares of 1; rough when few).</p>'
    )
    return f"<h2>Parameter importances</h2>{bars(shares, attr='importance', fmt='.3f')}{note}"


def _prompts(rows: list[TrialRow], best: TrialRow | None, text: Callable[[str, int], str]) -> str:
    """The best trial's prompt versions against trial 0's, a unified diff per role that differs."""
    default = next((r for r in rows if r.trial == 0), None)
    if best is None or default is None or best.trial == 0:
        why = "the default recipe (trial 0) is the best" if best and best.trial == 0 else "no best trial or no trial 0"
        return f"<h2>Prompts of the best trial</h2><p>Nothing to compare: {why}.</p>"
    ours, theirs = default.prompt_versions or {}, best.prompt_versions or {}
    parts = []
    for role in sorted(set(ours) | set(theirs)):
        old, new = ours.get(role), theirs.get(role)
        if old == new:
            parts.append(
                f'<h3>{escape(role)}</h3><p data-role="{escape(role)}">Same as the default (version {old}).</p>'
            )
            continue
        a = text(role, old).splitlines() if old is not None else []
        b = text(role, new).splitlines() if new is not None else []
        diff = difflib.unified_diff(
            a, b, f"{role} v{old} (trial 0)", f"{role} v{new} (trial {best.trial})", lineterm=""
        )
        marked = [
            f'<span class="{"add" if d[:1] == "+" else "del"}">{escape(d)}</span>' if d[:1] in ("+", "-") else escape(d)
            for d in diff
        ]
        shown = "\n".join(marked)
        parts.append(f'<h3>{escape(role)}: version {old} to {new}</h3><pre data-role="{escape(role)}">{shown}</pre>')
    return f"<h2>Prompts of the best trial (trial {best.trial}) against the default's</h2>{''.join(parts)}"
