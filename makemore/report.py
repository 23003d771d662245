"""`python -m makemore.report SWEEP_DIR`: rebuild a sweep's results.csv, results.md and heatmap.png
(results/sweep.py) from its job dirs, finished, still running or interrupted."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .hydra_app import sweep_root
from .results.sweep import build_report, find_jobs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m makemore.report", description="Rebuild results.csv, results.md and heatmap.png of a sweep dir."
    )
    parser.add_argument("sweep_dir", help="e.g. outputs/multirun/2026-11-22_10-00-00_1234")
    args = parser.parse_args(argv)
    d = Path(args.sweep_dir)
    if not d.is_dir():
        print(f"error: {d} is not a directory", file=sys.stderr)
        return 2
    jobs = find_jobs(d)
    if not jobs:
        print(
            f"error: {d} holds no sweep jobs (dirs whose .hydra/hydra.yaml says mode: MULTIRUN); pass one sweep "
            f"dir, e.g. outputs/multirun/<date>_<time>_<pid>",
            file=sys.stderr,
        )
        return 2
    others = sorted({sweep_root(j) for j in jobs} - {d})
    if others:  # e.g. outputs/multirun itself: one table of unrelated sweeps would mislead
        print(
            f"error: {d} is not one sweep: it holds the sweep{'s' if len(others) > 1 else ''} "
            f"{', '.join(p.name for p in others[:3])}{', ...' if len(others) > 3 else ''}; pass one of them, e.g. "
            f"python -m makemore.report {others[-1]}",
            file=sys.stderr,
        )
        return 2
    build_report(d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
