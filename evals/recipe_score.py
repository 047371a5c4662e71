"""A recipe's score: synthesis on a seed budget in a workspace, then a scorer on the data.

`score_recipe` is the objective of a study trial as a plain function: it can be called
on its own, and `optimizers.study` calls it once per stage of a trial. The synthesis
folder is named by the caller (by the recipe's content hash in studies), so a repeated
or retried recipe resumes its folder instead of starting again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autodata.recipe import Recipe
from autodata.workspace import Workspace
from evals.records import ScoreResult

# (synthesis folder, output folder) -> its result: a `ScoreResult` (a `ProxyResult` for the proxy) or the same
# as a dict, {"score": float, ...}, which `score_recipe` reads as a `ScoreResult`.
Scorer = Callable[[Path, Path], ScoreResult | dict]


@dataclass(frozen=True)
class RecipeScore:
    score: float
    metrics: dict[str, float]  # costs, acceptance and the scorer's numbers: what MLflow logs
    manifest: dict  # the synthesis manifest
    result: ScoreResult  # the scorer's own result


def score_recipe(
    recipe: Recipe, workspace: Workspace, run_dir: Path, *, seeds: int, scorer: Scorer, out_name: str = "proxy"
) -> RecipeScore:
    """Synthesize from the first `seeds` train seeds of the workspace's world into `run_dir`
    (resuming what is there; a progress bar where the workspace shows them), then score the data
    with `scorer` into `run_dir/out_name`.

    An empty dataset scores 0 without calling the scorer (nothing to train on).
    """
    report = workspace.synthesize(run_dir, recipe=recipe, limit=seeds)
    manifest = report.manifest
    accepted = manifest["items"]["accepted"]
    calls = sum(c["calls"] for c in manifest["llm_totals"].values())
    metrics = {
        "acceptance_rate": manifest["acceptance_rate"],
        "accepted_per_seed": manifest["accepted_per_seed"],
        "accepted_per_seed_with_evidence": manifest["accepted_per_seed_with_evidence"],
        "accepted_items": accepted,
        "llm_calls": calls,
        "llm_calls_per_accepted_item": calls / max(accepted, 1),
    }
    for role, cost in manifest["llm_per_accepted_item"].items():
        metrics |= {
            f"per_item.{role}.calls": cost["calls"],
            f"per_item.{role}.tokens": cost["prompt_tokens"] + cost["completion_tokens"],
        }
    if manifest["items"]["in_datasets"]:
        result = scorer(run_dir, run_dir / out_name)
        result = result if isinstance(result, ScoreResult) else ScoreResult.model_validate(result)
    else:
        result = ScoreResult(score=0.0)
    metrics |= result.numbers()
    return RecipeScore(result.score, metrics, manifest, result)


def proxy_scorer(
    workspace: Workspace, *, steps: int, dev_limit: int, score_metric: str, repeats: int = 1, split: str = "dev"
) -> Scorer:
    """The quick SFT proxy on the workspace's `split` as a scorer (studies: dev; promotion: confirm)."""
    from dataclasses import replace

    from evals.proxy import ProxySettings, run_proxy_in

    settings = replace(ProxySettings(), steps=steps, dev_limit=dev_limit, score_metric=score_metric, repeats=repeats)

    def score(run_dir: Path, out: Path) -> ScoreResult:
        return run_proxy_in(workspace, run_dir, out, settings=settings, split=split)

    return score


def acceptance_scorer(run_dir: Path, out: Path) -> ScoreResult:
    """A cheap score without training: accepted items per seed tried, with one number per seed (so
    intervals and paired differences work as for the proxy). For smoke tests of a deployment and quick
    sweeps; it measures yield, not what the data teaches (the proxy does)."""
    from autodata._io import read_jsonl
    from evals.intervals import mean_interval

    manifest = json.loads((Path(run_dir) / "manifest.json").read_text(encoding="utf-8"))
    per_seed = {row["seed_id"]: float(row["accepted"]) for row in read_jsonl(Path(run_dir) / "progress.jsonl")}
    ids = sorted(per_seed)
    per_question = [[per_seed[i] for i in ids]]
    return ScoreResult(
        score=manifest["accepted_per_seed"],
        accepted=manifest["items"]["accepted"],
        question_ids=ids,
        per_question=per_question,
        score_interval=mean_interval(per_question).as_interval(),
    )
