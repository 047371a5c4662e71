"""Does the proxy tell better data from worse? One dataset against a planted worse copy of it.

    python3 -m bench.proxy_signal [--data RUN] [--items 48] [--repeats 1] [--generate]

The good data is RUN's `sft_dataset.json` (a finished `autodata synthesize` folder), or by
default one built from the demo world's train seeds whose question's own BM25 search
returns a passage stating the answer first: a real search, its real observation, then the
gold answer, rendered by the training code. The planted worse copy is the same
conversations with each final answer swapped for the next item's (answers that no
observation supports). Both are scored by the quick SFT proxy on the same dev questions
with the same settings (embedded SmolLM2 student); for each metric the bench prints the
paired difference good - worse with its 95% interval, whether it separates the pair (the
interval above 0), and the noise floor: the half-width of one dataset's score interval.
`--generate` adds EM/SubEM/F1/format validity (llama.cpp generation: much slower).
Target on 2 cores: the default metric separates the pair in under 10 minutes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from autodata.settings import load_settings
from autodata.trajectory import AnswerStep, SearchStep, Trajectory, observation_text, to_sharegpt
from autodata.workspace import Workspace
from evals.intervals import mean_interval, paired_difference
from evals.proxy import GENERATION_METRICS, ProxySettings, run_proxy_in


def reference_data(workspace: Workspace, items: int) -> list[dict]:
    """Grounded trajectories from train seeds whose own search ranks an answer passage first."""
    seeds = [s for s in workspace.world.items("train") if s.metadata.get("answer_bm25_rank") == 1][:items]
    hits = workspace.retriever.search([s.question for s in seeds], topk=3)
    return [
        to_sharegpt(
            Trajectory(
                question=seed.question,
                steps=[
                    SearchStep(
                        think="I need to search for this.",
                        query=seed.question,
                        observation=observation_text(found),
                        hit_ids=[h.id for h in found],
                    ),
                    AnswerStep(think="The first document states it.", answer=seed.golden_answers[0]),
                ],
            )
        )
        for seed, found in zip(seeds, hits)
    ]


def swap_answers(examples: list[dict]) -> list[dict]:
    """Each conversation with its final turn taken from the next one (an answer nothing supports)."""
    finals = [e["conversations"][-1] for e in examples]
    return [
        {"conversations": e["conversations"][:-1] + [finals[(i + 1) % len(finals)]]} for i, e in enumerate(examples)
    ]


def write_data(folder: Path, examples: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sft_dataset.json").write_text(json.dumps(examples, ensure_ascii=False), encoding="utf-8")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a finished synthesis folder (default: built from train seeds)")
    parser.add_argument("--items", type=int, default=48, help="reference items to build (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=1, help="proxy trainings per dataset (default %(default)s)")
    parser.add_argument("--dev-limit", type=int, default=ProxySettings.dev_limit)
    parser.add_argument("--generate", action="store_true", help="also the generation metrics (llama.cpp; slow)")
    args = parser.parse_args()
    started = time.perf_counter()
    out = Path(tempfile.mkdtemp(prefix="autodata-bench-signal-"))
    settings = replace(ProxySettings(), repeats=args.repeats, dev_limit=args.dev_limit, generate=args.generate or None)
    with Workspace(load_settings(), prepare_demo=True) as workspace:
        good = (
            json.loads((args.data / "sft_dataset.json").read_text(encoding="utf-8"))
            if args.data
            else reference_data(workspace, args.items)
        )
        results = {
            name: run_proxy_in(workspace, write_data(out / name, examples), out / f"{name}-proxy", settings=settings)
            for name, examples in (("good", good), ("worse", swap_answers(good)))
        }
    minutes = (time.perf_counter() - started) / 60
    print(
        f"{len(good)} items against the same items with answers swapped; {results['good']['dev_n']} dev questions, "
        f"{args.repeats} repeat(s), {settings.steps} LoRA steps each"
    )
    print(f"{'metric':<12} {'good':>8} {'worse':>8} {'difference [95% CI]':<30} {'separates':<9} {'noise floor':>11}")
    for metric in ("likelihood", *(GENERATION_METRICS if args.generate else ())):
        good_q, worse_q = (results[name]["per_question_by_metric"][metric] for name in ("good", "worse"))
        diff, good_score, worse_score = (
            paired_difference(good_q, worse_q),
            mean_interval(good_q),
            mean_interval(worse_q),
        )
        print(
            f"{metric:<12} {good_score.mean:>8.3f} {worse_score.mean:>8.3f} "
            f"{f'{diff.mean:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]':<30} {'yes' if diff.above_zero else 'no':<9} "
            f"{good_score.half_width:>11.3f}"
        )
    print(f"whole bench: {minutes:.1f} minutes (target: the likelihood metric separates in under 10)")


if __name__ == "__main__":
    main()
