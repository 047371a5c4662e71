"""What each strategy yields on a world: accepted items per seed and why the rest were rejected.

    python3 -m bench.task_types [--seeds 10] [--strategies keep,insufficient_evidence,...] [--out DIR]

For each strategy alone (its weight 1, the others 0, the default recipe otherwise), it runs
`autodata synthesize` on the same first N train seeds whose own search reaches a golden
answer within the evidence search's depth (the world's `answer_bm25_rank`; other seeds are
`no_evidence` before any LLM call), with the configured endpoints (by default the embedded
model on the demo world), and prints one row per strategy: seeds, items accepted, yield, and
the rejection histogram. Run folders are kept under --out, so a second run resumes and reprints.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import get_args

from autodata import api
from autodata.recipe import Recipe, Strategy
from autodata.seeds import write_seeds
from autodata.settings import load_settings
from autodata.workspace import Workspace


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="train seeds with evidence per strategy (10)")
    parser.add_argument("--strategies", default=",".join(get_args(Strategy)), help="comma-separated (all)")
    parser.add_argument("--out", type=Path, default=None, help="where the run folders go (a temporary folder)")
    args = parser.parse_args(argv)
    settings = load_settings()
    with Workspace(settings, prepare_demo=True) as workspace:  # prepares the demo world on first use
        world = workspace.world
    depth = Recipe().search.evidence_passages  # the evidence search's depth: deeper answers are no_evidence
    seeds = [s for s in world.items("train") if 1 <= (s.metadata.get("answer_bm25_rank") or 0) <= depth][: args.seeds]
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-task-types-"))
    seeds_file = out / "seeds.jsonl"
    write_seeds(seeds_file, seeds)
    print(f"world: {settings.world_dir}; {len(seeds)} train seeds with evidence; runs in {out}")
    print(f"{'strategy':<24}{'seeds':>6}{'accepted':>10}{'yield':>8}{'minutes':>9}  rejections")
    for strategy in args.strategies.split(","):
        weights = {name: 0.0 for name in get_args(Strategy)} | {strategy: 1.0}
        started = time.monotonic()
        report, _ = api.synthesize(
            out / strategy,
            recipe=Recipe().with_changes(strategies=weights),
            seeds=seeds_file,
            settings=settings,
            show_progress=False,
        )
        manifest = report.manifest
        accepted = manifest["items"]["accepted"]
        rejections = ", ".join(f"{k} {v}" for k, v in sorted(manifest["rejections"].items(), key=lambda kv: -kv[1]))
        minutes = (time.monotonic() - started) / 60
        print(
            f"{strategy:<24}{len(seeds):>6}{accepted:>10}{accepted / max(len(seeds), 1):>8.2f}{minutes:>9.1f}  {rejections}"
        )


if __name__ == "__main__":
    main()
