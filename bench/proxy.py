"""The quick SFT proxy's cost on the demo world: seconds and tokens/s of training and evaluation.

    python3 -m bench.proxy --data RUN [--steps 24] [--dev-limit 100] [--generate]

RUN is a finished `autodata synthesize` folder (for example a study trial's folder under
$AUTODATA_HOME/studies/demo/runs after `autodata demo`). Target on 2 CPU cores with the
default student: the proxy of a study trial (24 LoRA steps, then the likelihood probe on
100 dev questions) in under 3 minutes. `--generate` adds dev EM with llama.cpp generation.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from autodata.api import run_proxy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--dev-limit", type=int, default=100)
    parser.add_argument("--generate", action="store_true")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="autodata-bench-proxy-"))
    start = time.perf_counter()
    result = run_proxy(args.data, out, steps=args.steps, dev_limit=args.dev_limit, generate=args.generate or None)
    total = time.perf_counter() - start
    print(
        f"training:   {result['train_seconds']:7.1f} s, {result['train_tokens_per_s']:7.1f} tokens/s "
        f"({len(result['train_loss'])} steps, {result['train_tokens']} tokens)"
    )
    print(
        f"likelihood: {result['likelihood_seconds']:7.1f} s for base (unless cached) and tuned, "
        f"{result['dev_n']} dev questions; gain {result['likelihood_gain']:+.3f}"
    )
    if args.generate:
        print(
            f"generation: {result['eval_seconds']:7.1f} s; format valid {result['base_format_valid']:.2f} -> "
            f"{result['format_valid']:.2f}; EM {result['base_dev_em']:.3f} -> {result['dev_em']:.3f}"
        )
    print(f"whole proxy (loading included): {total:.1f} s   (target < 180 s without --generate)")


if __name__ == "__main__":
    main()
