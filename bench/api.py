"""The Python API against the CLI on the same config: does `api.setup` + `api.train` train as fast as
`python -m makemore.run`? Interleaved rounds, each side's steps/s of training steps (the CLI's metrics.json
steps_per_second; the API's steps over Progress.seconds), and their median ratio.

    python bench/api.py --data names.txt                     # the lecture's config, 20000 steps, 3 rounds
    python bench/api.py --rounds 5 -- model.hidden=300 train.steps=10000
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
sys.path.insert(0, str(ROOT))

from makemore import api  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="a word file (default: the embedded names)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("overrides", nargs="*", default=["experiment=lecture", "train.steps=20000"])
    args = p.parse_args()
    overrides = [*args.overrides, "samples=0"] + ([f"data.path={Path(args.data).resolve()}"] if args.data else [])
    ratios = []
    for r in range(args.rounds):
        run = api.setup(api.compose(overrides))
        progress = api.train(run)
        api_sps = progress.step / progress.seconds
        with tempfile.TemporaryDirectory() as d:
            cmd = [sys.executable, "-m", "makemore.run", *overrides, f"hydra.run.dir={d}/run"]
            subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
            cli_sps = json.loads(Path(d, "run", "metrics.json").read_text())["steps_per_second"]
        ratios.append(api_sps / cli_sps)
        print(f"round {r + 1}: API {api_sps:.0f}, CLI {cli_sps:.0f} steps/s, ratio {ratios[-1]:.3f}", flush=True)
    median = statistics.median(ratios)
    print(f"{' '.join(overrides)}: the API's steps/s over the CLI's, median of {args.rounds}: {median:.3f}")


if __name__ == "__main__":
    main()
