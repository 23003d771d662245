"""metrics.json: the one record of a run's result, written by a run and read by the sweep report.

train_loss, dev_loss, test_loss   the replicas' mean at the last evaluation (null unless status ok or
                                  pruned; test only with train.eval_test=true and status ok)
steps, params, seconds            steps trained, parameters of one replica, time in training steps
steps_per_second                  steps / seconds (the console's figure too)
model_steps_per_second            x replicas
examples, replicas, device
status                            ok | pruned (a search's pruner stopped it) | diverged | failed
error                             the one-line message when status is not ok (pruned: the step and why)
wall_seconds                      the whole job, start to end (data, training, outputs)
*_std, replica_losses             with replicas > 1
fit                               full-batch runs: analysis.fit_report
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path
from typing import Any

FILENAME = "metrics.json"
STATUSES = ("ok", "pruned", "diverged", "failed")
LOSSES = ("train_loss", "dev_loss", "test_loss")


def steps_per_second(steps: int, seconds: float) -> float:
    """Training steps per second of step time: the console's and metrics.json's one figure."""
    return steps / seconds if seconds > 0 else 0.0


def summarize(
    losses: dict[str, list[float] | None],
    *,
    steps: int,
    seconds: float,
    params: int,
    examples: dict[str, int],
    replicas: int,
    device: str,
    status: str = "ok",
    error: str | None = None,
) -> dict[str, Any]:
    """The record of a run: `losses` maps train/dev/test to each replica's loss (None: not evaluated)."""

    def mean(xs):
        return None if xs is None else float(statistics.fmean(xs))

    def std(xs):
        return None if xs is None or len(xs) < 2 else float(statistics.stdev(xs))

    sps = steps_per_second(steps, seconds)
    m: dict[str, Any] = {f"{s}_loss": mean(losses.get(s)) for s in ("train", "dev", "test")}
    m.update(
        steps=steps,
        params=params,
        seconds=round(seconds, 3),
        steps_per_second=round(sps, 1),
        model_steps_per_second=round(sps * replicas, 1),
        examples=examples,
        replicas=replicas,
    )
    if replicas > 1:
        m.update({f"{s}_loss_std": std(losses.get(s)) for s in ("train", "dev", "test")})
        m["replica_losses"] = {s: losses.get(s) for s in ("train", "dev", "test")}
    m.update(status=status, error=error, device=device)
    return m


def failed(error: str) -> dict[str, Any]:
    """The record of a job that could not run (bad input in a sweep, a crash)."""
    return {"status": "failed", "error": error, "train_loss": None, "dev_loss": None}


def write_json(path: Path, obj: Any) -> None:
    """Atomically: a reader (the sweep report of a running sweep) sees the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def write(run_dir: Path, metrics: dict[str, Any]) -> None:
    write_json(Path(run_dir) / FILENAME, metrics)


def read(run_dir: Path) -> dict[str, Any] | None:
    """A run's record, None if it has none yet; an unreadable file or an ok run without a finite dev loss
    reads as failed."""
    path = Path(run_dir) / FILENAME
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError:
        return failed(f"{FILENAME} unreadable")
    m.setdefault("status", "ok")
    dev = m.get("dev_loss")
    if m["status"] == "ok" and not (isinstance(dev, (int, float)) and math.isfinite(dev)):
        m["status"] = "failed"
    return m
