"""Sweep results: `results.csv`, `results.md` (best dev loss first) and, for a two-key grid, `heatmap.png`.

Written at the end of every multirun by the `SweepReport` Hydra callback (hydra_app.py), and rebuilt from any sweep dir
(finished, still running or interrupted) with `python -m makemore.report DIR`: each job dir holds
.hydra/overrides.yaml and, once it has finished, metrics.json; jobs without metrics are listed as missing.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ..hydra_app import JOB_DEPTHS, PRESET_KEYS
from . import record

log = logging.getLogger("makemore")


def _value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def find_jobs(sweep_dir: Path) -> list[Path]:
    """The job dirs at the sweep layout's depths (config.job_name) holding the .hydra record of a multirun
    job (single runs that happen to lie there are not part of a sweep)."""
    found = [p for depth in JOB_DEPTHS for p in sweep_dir.glob("*/" * depth + ".hydra/hydra.yaml")]
    return sorted(p.parent.parent for p in found if _is_sweep_job(p))


def _is_sweep_job(hydra_yaml: Path) -> bool:
    try:
        mode = (yaml.safe_load(hydra_yaml.read_text()) or {}).get("hydra", {}).get("mode")
    except (OSError, yaml.YAMLError):
        return False
    return mode == "MULTIRUN" and (hydra_yaml.parent / "overrides.yaml").is_file()


def read_job(job: Path, sweep_dir: Path) -> dict[str, Any]:
    overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
    knobs = {}
    for o in overrides:
        key, _, value = o.partition("=")
        key = key.lstrip("+~")
        if key not in PRESET_KEYS:
            knobs[key] = _value(value)
    row: dict[str, Any] = {
        "job": str(job.relative_to(sweep_dir)),
        "num": _job_num(job),
        "knobs": knobs,
        "params": None,
        "train_loss": None,
        "dev_loss": None,
        "train_loss_std": None,
        "dev_loss_std": None,
        "wall_seconds": None,
        "status": "missing",
        "error": None,
    }
    m = record.read(job)
    if m is not None:
        for k in ("params", "train_loss", "dev_loss", "train_loss_std", "dev_loss_std", "error", "status"):
            row[k] = m.get(k)
        row["wall_seconds"] = m.get("wall_seconds")  # the job's own time, start to end (metrics.json's "seconds"
        # is its training steps' alone)
    return row


def _job_num(job: Path) -> int | None:
    """The job's number in its sweep (Hydra's hydra.job.num: the console's [#n], TensorBoard's trial id)."""
    try:
        num = (yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text()) or {}).get("hydra", {})["job"]["num"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return num if isinstance(num, int) else None


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """All jobs, best dev loss first; failed and missing jobs last."""
    rows = [read_job(j, sweep_dir) for j in find_jobs(sweep_dir)]
    return sorted(
        rows, key=lambda r: (r["status"] != "ok", r["dev_loss"] if _finite(r["dev_loss"]) else math.inf, r["job"])
    )


def varying_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    keys = sorted({k for r in rows for k in r["knobs"]})
    return [k for k in keys if len({json.dumps(r["knobs"].get(k), sort_keys=True) for r in rows}) > 1]


def _fmt(x: Any, std: Any = None) -> str:
    if not _finite(x):
        return ""
    return f"{x:.4f}" + (f" ± {std:.4f}" if _finite(std) else "")


COLUMNS = ("params", "train_loss", "train_loss_std", "dev_loss", "dev_loss_std", "wall_seconds", "status", "error")


def to_csv(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["job", "num", *keys, *COLUMNS])
    cell = lambda x: "" if x is None else x  # noqa: E731  (a loss of 0.0 stays 0.0)
    for r in rows:
        w.writerow(
            [r["job"], cell(r.get("num")), *(r["knobs"].get(k, "") for k in keys), *(cell(r[c]) for c in COLUMNS)]
        )
    return buf.getvalue()


def to_markdown(rows: Sequence[dict[str, Any]], title: str, keys: Sequence[str] = ()) -> str:
    """The table; the overrides column names the keys that vary across the sweep (all, if none do)."""
    lines = [
        f"# {title}",
        "",
        "| job # | overrides | params | train loss | dev loss | wall seconds | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:  # best dev loss first; each row keeps its job number (the console's [#n])
        # a key a job does not set (a conditional one of a search) is left out of its row
        shown = {k: r["knobs"][k] for k in keys if k in r["knobs"]} if keys else r["knobs"]
        over = ",".join(f"{k}={_short(v)}" for k, v in shown.items()) or r["job"]
        status = r["status"] + (f": {r['error']}" if r["error"] and r["status"] != "ok" else "")
        lines.append(
            f"| {'' if r.get('num') is None else r['num']} | {over} | {r['params'] or ''} | "
            f"{_fmt(r['train_loss'], r['train_loss_std'])} | {_fmt(r['dev_loss'], r['dev_loss_std'])} | "
            f"{'' if r['wall_seconds'] is None else r['wall_seconds']} | "
            f"{status.replace('|', '/')} |"
        )
    ok = sum(r["status"] == "ok" for r in rows)
    pruned = sum(r["status"] == "pruned" for r in rows)
    lines += [
        "",
        f"{ok}/{len(rows)} jobs finished"
        + (f", {pruned} pruned" if pruned else "")
        + (f"; best dev loss {_fmt(rows[0]['dev_loss'])}" if ok else ""),
    ]
    return "\n".join(lines) + "\n"


def heatmap(rows: Sequence[dict[str, Any]], keys: Sequence[str], path: Path) -> Path:
    """Dev loss over a two-key grid (the mean over any other varying key, e.g. seeds), values in the cells."""
    from . import plots

    kx, ky = keys
    xs = sorted({r["knobs"].get(kx) for r in rows}, key=_order)
    ys = sorted({r["knobs"].get(ky) for r in rows}, key=_order)
    grid = [[math.nan] * len(xs) for _ in ys]
    for j, y in enumerate(ys):
        for i, x in enumerate(xs):
            vals = [
                r["dev_loss"]
                for r in rows
                if r["knobs"].get(kx) == x
                and r["knobs"].get(ky) == y
                and r["status"] == "ok"
                and _finite(r["dev_loss"])
            ]
            if vals:
                grid[j][i] = statistics.fmean(vals)
    fig = plots.heatmap(grid, xs, ys, kx, ky)
    plots.save(fig, path)
    plots.close(fig)
    return path


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _order(v: Any):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def build_report(sweep_dir: Path | str, echo: bool = True) -> list[dict[str, Any]]:
    """Write results.csv, results.md and (two varying keys) heatmap.png into the sweep dir."""
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    keys = varying_keys(rows)
    (sweep_dir / "results.csv").write_text(to_csv(rows, keys))
    md = to_markdown(rows, f"Sweep {sweep_dir.name}", keys)
    (sweep_dir / "results.md").write_text(md)
    grid_keys = [k for k in keys if k != "seed"]
    if len(grid_keys) == 2 and any(r["status"] == "ok" for r in rows):
        heatmap(rows, grid_keys, sweep_dir / "heatmap.png")
    if echo:
        print(md, end="")
    return rows
