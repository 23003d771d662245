"""Continuing work from its dir: what `resume=PATH` means on the command line, and what a sweep's job does with
what an earlier session of its sweep left in its dir.

`resume=PATH` names a run dir or a sweep dir; `command_line` turns it into the command that continues it, before
Hydra parses anything (so a dir name holding `=` or `,`, as names did before they were made override-safe, works
too): the overrides recorded in the dir, then those of this command line (which win), then
`hydra.run.dir=PATH resume=true` for a run, or `-m ... hydra.sweep.dir=PATH` for a sweep. A run's recorded
overrides are those its checkpoint was written with (a refused attempt never writes one), else Hydra's
.hydra/overrides.yaml; a sweep's are in its multirun.yaml.

A sweep's job (`job_state`): finished in an earlier session of the same sweep (its metrics.json, with the sweep's
id): skipped, its record kept; interrupted (a checkpoint, no record): resumed from the checkpoint; failed or new:
run from the start. Every sweep has an id (`sweep.json` in its dir, written when it starts and kept when it is
continued); a job records it and checks it before it writes, so a job left running from a sweep that was deleted
and started again under the same dir never writes into the new one (`StaleJob`).
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError

SWEEP_FILE = "sweep.json"  # {"sweep_id": ...}
CHECKPOINT = "checkpoint.pt"  # checkpoint.FILENAME (not imported: that module imports torch)
FINISHED = ("ok", "diverged", "pruned")  # results a rerun would only repeat
# overrides a continuation sets itself: left out of the recorded ones it replays
OWN_KEYS = ("resume", "hydra.run.dir", "hydra.sweep.dir", "hydra.mode")
UNQUOTED = re.compile(r"[A-Za-z0-9_./+@%-]+")  # what Hydra's grammar (and a shell) takes unquoted in a path


class StaleJob(RuntimeError):
    """A sweep job whose sweep dir now belongs to another sweep (deleted and started again): it stops unwritten."""


# -- resume=PATH on the command line ---------------------------------------------------------------------------


def key_of(override: str) -> str:
    """The key (or group) an override sets: `+model.x=1` -> model.x, `model=wavenet` -> model."""
    return override.split("=", 1)[0].lstrip("+~")


def quote(value: str) -> str:
    """A value as Hydra's override grammar reads it back: as it is where it can, else single-quoted."""
    if UNQUOTED.fullmatch(value):
        return value
    return "'" + re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value) + "'"


def command_line(argv: list[str]) -> list[str]:
    """argv, with `resume=PATH` (a run or a sweep dir) replaced by the command line that continues it
    (module docstring); `resume=true`/`false` and every other argument as they are. ConfigError for a PATH that
    is neither a run nor a sweep dir, or a command that also names the dir."""
    hits = [i for i, a in enumerate(argv) if a.startswith("resume=")]
    if not hits:
        return argv
    value = argv[hits[-1]].split("=", 1)[1]
    if value.strip().lower() in ("true", "false", "null", "none", ""):
        return argv
    rest = [a for i, a in enumerate(argv) if i not in hits]
    path = Path(value.strip("'\"")).expanduser()
    for own in ("hydra.run.dir", "hydra.sweep.dir"):
        if any(key_of(a) == own for a in rest):
            raise ConfigError(f"resume={value} continues the work in that dir: leave out {own}")
    if not path.is_dir():
        raise ConfigError(
            f"resume={value}: no such dir; resume=PATH takes a run dir (outputs/runs/<name>) or a sweep dir "
            "(outputs/multirun/<name>, outputs/search/<study>); resume=true continues the run in hydra.run.dir"
        )
    if (path / "multirun.yaml").is_file():
        return _sweep_command(path, rest)
    if _is_sweep_job(path):
        raise ConfigError(
            f"resume={value} is a job of the sweep {path.parent}: continue the sweep, resume={path.parent}"
        )
    recorded = run_overrides(path)
    if recorded is None:
        raise ConfigError(
            f"resume={value}: {path} is not a run dir (no {CHECKPOINT}, no .hydra/overrides.yaml) nor a sweep dir "
            "(no multirun.yaml)"
        )
    return _merged(recorded, rest) + [f"hydra.run.dir={quote(str(path))}", "resume=true"]


def _merged(recorded: list[str], given: list[str]) -> list[str]:
    """The recorded overrides (minus the continuation's own and those the command line sets again), then argv's."""
    keys = {key_of(a) for a in given if "=" in a}
    return [o for o in recorded if key_of(o) not in keys and key_of(o) not in OWN_KEYS] + given


def _sweep_command(path: Path, rest: list[str]) -> list[str]:
    overrides = (yaml.safe_load((path / "multirun.yaml").read_text()) or {}).get("hydra", {}).get("overrides", {})
    flags = [a for a in rest if a.startswith("-")]
    given = [a for a in rest if not a.startswith("-")]
    recorded = list(overrides.get("hydra") or []) + list(overrides.get("task") or [])
    multirun = [] if {"-m", "--multirun"} & set(flags) else ["-m"]
    return multirun + flags + _merged(recorded, given) + [f"hydra.sweep.dir={quote(str(path))}"]


def _is_sweep_job(path: Path) -> bool:
    hydra_yaml = path / ".hydra" / "hydra.yaml"
    if not hydra_yaml.is_file() or not (path.parent / "multirun.yaml").is_file():
        return False
    try:
        return (yaml.safe_load(hydra_yaml.read_text()) or {}).get("hydra", {}).get("mode") == "MULTIRUN"
    except yaml.YAMLError:
        return False


def run_overrides(path: Path) -> list[str] | None:
    """The overrides a run dir's run was accepted with: its checkpoint's, else .hydra/overrides.yaml (None: neither
    is there)."""
    if (path / CHECKPOINT).is_file():
        from . import checkpoint

        recorded = checkpoint.load(path).get("overrides")
        if recorded is not None:
            return list(recorded)
    hydra_file = path / ".hydra" / "overrides.yaml"
    if hydra_file.is_file():
        return list(yaml.safe_load(hydra_file.read_text()) or [])
    return None


# -- a sweep's id and its jobs -----------------------------------------------------------------------------------


def sweep_id(sweep_dir: Path | str, create: bool = False) -> str | None:
    """The id of the sweep in `sweep_dir` (None where it has none); with create=True one is made if missing."""
    path = Path(sweep_dir) / SWEEP_FILE
    try:
        return json.loads(path.read_text())["sweep_id"]
    except (OSError, ValueError, KeyError, TypeError):
        if not create:
            return None
    new = uuid.uuid4().hex
    path.write_text(json.dumps({"sweep_id": new}) + "\n")
    return new


def check_owner(sweep_dir: Path | str, own_id: str | None) -> None:
    """Raise StaleJob if the sweep dir now holds another sweep than the job's (own_id)."""
    if own_id is None:
        return
    now = sweep_id(sweep_dir)
    if now != own_id:
        raise StaleJob(
            f"the sweep dir {sweep_dir} now holds another sweep (id {now}, this job's {own_id}): this job stops "
            "without writing into it"
        )


def job_state(record: dict[str, Any] | None, out: Path, own_id: str | None) -> str:
    """What a sweep job does with its dir: "finished" (skip it: a record of this sweep saying it ended),
    "interrupted" (resume from its checkpoint: no record), "new" (run from the start: nothing there yet, or a
    failed run)."""
    if record is not None:
        ours = record.get("sweep_id") in (None, own_id)  # a record from before sweep ids counts as this sweep's
        return "finished" if ours and record.get("status") in FINISHED else "new"
    return "interrupted" if (out / CHECKPOINT).is_file() else "new"


def adopt_checkpoint(previous: Path | None, out: Path) -> bool:
    """A search's trial that reruns an interrupted one (`previous`, its job dir) starts from that trial's
    checkpoint: copied into this job's dir (the old dir keeps its own). True if there was one to copy."""
    if previous is None or (out / CHECKPOINT).is_file() or not (previous / CHECKPOINT).is_file():
        return False
    shutil.copy2(previous / CHECKPOINT, out / CHECKPOINT)
    return True
