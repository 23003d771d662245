"""One config trained by two checkouts of makemore in interleaved rounds: is a change as fast, and does it train the
same numbers?

    python bench/compare.py --base ../makemore-before -- experiment=lecture train.steps=20000 data.path=names.txt
    python bench/compare.py --base ../makemore-before --rounds 5 -- experiment=best train.steps=3000

Each round runs `python -m makemore.run <overrides>` once in each checkout (this one and --base), the order
flipping every round, so a slow minute of a shared machine falls on both alike. A run's speed is metrics.json's
steps_per_second: training steps over the time spent in them (data loading, evaluation and start-up excluded).
It prints each round's ratio, their median, and whether the two trained the same losses bit for bit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(checkout: Path, overrides: list[str], out: Path) -> dict:
    """One run of the checkout's own code (python -m puts its dir first on sys.path); its metrics.json."""
    cmd = [sys.executable, "-m", "makemore.run", *overrides, "samples=0", f"hydra.run.dir={out}"]
    r = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{checkout}: {' '.join(cmd[1:])} failed:\n{r.stderr[-2000:]}")
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the other checkout (e.g. a git worktree of the commit before)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("overrides", nargs="*", help="the run's overrides, after --")
    args = ap.parse_args()
    sides = {"this": ROOT, "base": Path(args.base).resolve()}
    speed = {k: [] for k in sides}
    losses = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for name in list(sides)[:: (-1) ** i]:
                m = run(sides[name], args.overrides, Path(tmp) / f"{name}_{i}")
                speed[name].append(m["steps_per_second"])
                losses[name] = (m["train_loss"], m["dev_loss"])
            print(f"round {i + 1}: this {speed['this'][-1]:.0f} steps/s, base {speed['base'][-1]:.0f} steps/s, "
                  f"ratio {speed['this'][-1] / speed['base'][-1]:.3f}", flush=True)  # fmt: skip
    ratios = [a / b for a, b in zip(speed["this"], speed["base"])]
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    print(f"{' '.join(args.overrides)}: this checkout's steps/s over the base's, median of {args.rounds} rounds "
          f"{statistics.median(ratios):.3f} (quartiles {q[0]:.3f}-{q[2]:.3f}); best {max(speed['this']):.0f} vs "
          f"{max(speed['base']):.0f} steps/s")  # fmt: skip
    same = losses["this"] == losses["base"]
    print(f"train, dev: this {losses['this']}, base {losses['base']}: {'bit-identical' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
