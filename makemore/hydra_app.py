"""The Hydra glue, in one place: the config groups, resolvers, the run and sweep dir layout, moved keys, the
sweep callbacks and the one main wrapper of the commands (run, lr_find). Everything below the commands is plain
Python that knows no Hydra; this module reads what Hydra knows and hands it on.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from .config import (
    MODEL_CONFIGS,
    AdamWConfig,
    Config,
    ConfigError,
    CosineSchedule,
    DataConfig,
    DeviceConfig,
    DeviceKind,
    ModelKind,
    SGDConfig,
    StepSchedule,
)

log = logging.getLogger("makemore")

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"  # config.yaml, hparams_search/, hydra/launcher/
EXPERIMENTS = ROOT / "experiments"  # the presets, read from the checkout

MOVED_KEYS = {"train.weight_decay": "optimizer.weight_decay"}


def check_moved_keys(argv: list[str]) -> None:
    """Raise ConfigError for a command-line override of a key that moved (before Hydra reports it missing)."""
    for arg in argv:
        key = arg.split("=", 1)[0].lstrip("+~")
        if key in MOVED_KEYS:
            raise ConfigError(
                f"{key} moved to {MOVED_KEYS[key]} (the optimizer group: optimizer=sgd|adamw); "
                f"use {MOVED_KEYS[key]}={arg.split('=', 1)[1] if '=' in arg else '...'}"
            )


def register_configs() -> None:
    """Put the schema and the groups' options into Hydra's ConfigStore. Each option is a dataclass of config.py,
    so every default is written once, there; the presets in experiments/ become the `experiment` group
    (`# @package _global_` deltas)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="data", name="names", node=DataConfig)
    for kind, family in MODEL_CONFIGS.items():  # model=mlp, model=transformer, ...
        cs.store(group="model", name=kind, node=family(kind=ModelKind(kind)))
    cs.store(group="schedule", name="step", node=StepSchedule)
    cs.store(group="schedule", name="cosine", node=CosineSchedule)
    cs.store(group="optimizer", name="sgd", node=SGDConfig)
    cs.store(group="optimizer", name="adamw", node=AdamWConfig)
    for kind in DeviceKind:
        cs.store(group="device", name=kind.value, node=DeviceConfig(name=kind))
    for preset in sorted(EXPERIMENTS.glob("*.yaml")):
        cs.store(group="experiment", name=preset.stem, node=OmegaConf.load(preset), package="_global_")


# the project's Optuna sweeper (hydra_plugins/makemore_optuna, logic in search.py): `hydra/sweeper=makemore_optuna`
SEARCH_SWEEPER = "hydra_plugins.makemore_optuna.optuna_sweeper.OptunaSweeper"


# -- where runs go: the one definition of the run and sweep dir layout -----------------------------------------

# group choices that select presets: they are not knobs of a run (the sweep report leaves them out)
PRESET_KEYS = ("experiment", "hparams_search")
# overrides left out of run and job dir names (hydra.job.config.override_dirname.exclude_keys): the seed (a
# swept seed gets its own level), paths, the device and the presets
UNNAMED_KEYS = (
    "seed",
    "data.path",
    "resume",
    "hydra.run.dir",
    "hydra.sweep.dir",
    "device",
    "device.threads",
    "hydra/launcher",
) + PRESET_KEYS


def job_name(override_dirname: str, task_overrides: Any, num: Any = None, sweeper: Any = None) -> str:
    """A sweep job's dir (its `hydra.sweep.subdir`): its overrides (UNNAMED_KEYS left out), plus a `/seed-N`
    level when the seed is swept, so that jobs differing only in seed never share a dir. Optuna's trials may
    repeat a point, so there the trial number leads: `<num>_<overrides>`."""
    seeds = [o for o in (task_overrides or []) if str(o).startswith("seed=")]
    name = override_dirname or "defaults"
    if "optuna" in str(sweeper or "").lower():
        return short_name(safe_name(f"{num}_{override_dirname}"))
    return short_name(safe_name(name)) + ("/" + safe_name(seeds[0]) if seeds else "")


def safe_name(text: str) -> str:
    """A dir name that Hydra's override grammar and a shell take unquoted (`resume=outputs/runs/<name>`), from
    the overrides Hydra joins as `key-value+key-value` (conf/config.yaml's kv_sep and item_sep): what is left of
    `=`, `,` and `:` becomes `-`, `_` and `-`, brackets, quotes and spaces go, anything else becomes `_`."""
    table = str.maketrans({"=": "-", ",": "_", ":": "-"} | {c: None for c in "[](){}'\" \t"})
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text.translate(table))


def sweep_root(job: Path) -> Path:
    """The sweep dir a job dir belongs to (job_name's layout): <sweep>/<subdir> or <sweep>/<subdir>/seed-N."""
    return job.parent.parent if job.name.startswith("seed-") else job.parent


JOB_DEPTHS = (1, 2)  # job dirs lie this many levels below their sweep dir


def run_stamp(name: str) -> str:
    """`11-22 17:46:36` (`_2` ...) from a run dir's name `<yyyy>-<mm>-<dd>_<HH>-<MM>-<SS>[_<overrides>][_N]`."""
    date, _, rest = name.partition("_")
    suffix = re.search(r"_(\d+)$", name)
    return f"{date[5:]} {rest[:8].replace('-', ':')}" + (f" _{suffix.group(1)}" if suffix else "")


def swept_keys(task_overrides: Any, sweeper_params: Any) -> list[str]:
    """The keys (or groups) a multirun varies, in order: its command-line sweeps ("key=a,b",
    "key=range(...)", ...) and its sweeper's params (a grid preset's or Optuna's search space)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    texts = [str(o) for o in (task_overrides or [])]
    texts += [f"{k}={v}" for k, v in dict(sweeper_params or {}).items()]
    keys: list[str] = []
    for o in OverridesParser.create().parse_overrides(texts):
        if o.is_sweep_override() and o.key_or_group not in keys:
            keys.append(o.key_or_group)
    return keys


def unnamed_swept_key(task_overrides: Any, sweeper_params: Any, excluded: Any) -> str | None:
    """The first key left out of job dir names (`excluded`, hydra's override_dirname.exclude_keys) that a
    multirun varies: its jobs would share one dir. seed is exempt: job_name gives it its own level."""
    unnamed = set(excluded or ()) - {"seed"}
    return next((k for k in swept_keys(task_overrides, sweeper_params) if k in unnamed), None)


MAX_NAME = 200  # characters of a run dir's name (file systems allow 255 bytes)
_claimed: dict = {}


def short_name(name: str) -> str:
    """A dir name of at most MAX_NAME characters: a long one keeps its start and ends with a hash of the whole,
    so it stays readable and distinct."""
    import hashlib

    if len(name) <= MAX_NAME:
        return name
    return name[: MAX_NAME - 10] + "-h" + hashlib.sha1(name.encode()).hexdigest()[:8]


# what makemore.lr_find does not read (it trains lr_find.steps at its own lrs): left out of its dir name
LR_FIND_UNUSED = ("train.steps", "train.eval", "train.checkpoint", "train.log", "train.diagnose", "schedule", "samples")


def lr_find_name(overrides: str) -> str:
    """lr_find's dir: `lr_find` and the overrides it reads (of Hydra's `key-value+key-value`)."""
    used = [o for o in overrides.split("+") if o and not o.split("-", 1)[0].lstrip("~").startswith(LR_FIND_UNUSED)]
    return "+".join(["lr_find", *used])


def run_dir(parent: str, stamp: str, overrides: str, job: str = "run") -> str:
    """A single run's dir, `<parent>/<stamp>_<overrides>` (just the stamp without overrides; safe_name's
    characters; makemore.lr_find's `<stamp>_lr_find+<the overrides it reads>`), created here so that two runs
    started in the same second with the same overrides get distinct dirs (`_2`, `_3`, ...). Memoized: Hydra may
    resolve hydra.run.dir more than once in a process. The dirs it creates are noted, so that a run refused for
    bad input can remove them (leave_as_found)."""
    if job == "lr_find":
        overrides = lr_find_name(overrides)
    key = (parent, stamp, overrides)
    if key not in _claimed:
        name = short_name(safe_name(f"{stamp}_{overrides}" if overrides else stamp))
        missing = [p for p in [Path(parent), *Path(parent).parents] if not p.exists()]
        os.makedirs(parent, exist_ok=True)
        for n in range(1, 10000):
            path = os.path.join(parent, name if n == 1 else f"{name}_{n}")
            try:
                os.mkdir(path)  # atomic: of two processes, one gets it
                break
            except FileExistsError:
                continue
        _claimed[key] = path
        _created.extend([Path(path), *missing])  # deepest first
    return _claimed[key]


_created: list[Path] = []  # dirs this process made for its run (run_dir), deepest first


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    # a per-process value for run and sweep dir names: two runs started in the same second differ
    OmegaConf.register_new_resolver("mm.pid", lambda: os.getpid(), use_cache=True, replace=True)
    OmegaConf.register_new_resolver("mm.job_name", job_name, replace=True)
    OmegaConf.register_new_resolver("mm.run_dir", run_dir, replace=True)
    OmegaConf.register_new_resolver("mm.unnamed_keys", lambda: list(UNNAMED_KEYS), replace=True)


# -- bad input: one line, nothing left behind ----------------------------------------------------------------


def check_known_keys(cfg: Any) -> None:
    """Refuse a key the schema does not have, also one added with `+` (`+model.hiden=3` composes, as Hydra's
    own error for `model.hiden=3` suggests): ConfigError naming it and the closest key that exists."""
    from omegaconf import DictConfig, OmegaConf

    def walk(node: Any, prefix: str) -> None:
        schema = OmegaConf.get_type(node)
        fields = getattr(schema, "__dataclass_fields__", None)
        for key in node.keys() if isinstance(node, DictConfig) else ():
            if key == "hydra" and not prefix:
                continue
            if fields is not None and key not in fields:
                raise ConfigError(unknown_key(f"{prefix}{key}", schema))
            child = node._get_node(key)
            if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
                walk(child, f"{prefix}{key}.")

    walk(cfg, "")


def unknown_key(full_key: str, schema: Any) -> str:
    """`unknown key model.hiden; did you mean model.hidden? (model=mlp has: ...)`"""
    import difflib
    from dataclasses import fields

    parent, _, key = full_key.rpartition(".")
    names = [f.name for f in fields(schema)] if hasattr(schema, "__dataclass_fields__") else []
    where = f"{parent}." if parent else ""
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    hint = f"; did you mean {where}{close[0]}?" if close else ""
    owner = parent or "the config"
    kind = next((f.default for f in fields(schema) if f.name == "kind"), None) if names else None
    if parent == "model" and kind is not None:
        owner = f"model={getattr(kind, 'value', kind)}"
    if parent == "schedule":
        owner, hint = _other_schedule(key, schema, hint)
    return f"unknown key {full_key}{hint} ({owner} has: {', '.join(names)})"


def _other_schedule(key: str, schema: Any, hint: str) -> tuple[str, str]:
    """A key of the other schedule: most often a preset's (experiment=transformer sets schedule.lrs), which
    merges into whichever schedule the command line picks, so name the schedule that has it."""
    from dataclasses import fields

    from .config import CosineSchedule, StepSchedule

    mine = next((f.default for f in fields(schema) if f.name == "name"), "?")
    for other in (StepSchedule, CosineSchedule):
        theirs = next(f.default for f in fields(other) if f.name == "name")
        if theirs != mine and key in {f.name for f in fields(other)}:
            hint = f": a key of schedule={theirs}, and this run has schedule={mine}; a preset that sets it runs with "
            hint += f"schedule={theirs} only"
    return f"schedule={mine}", hint


def hydra_error(e: BaseException) -> str | None:
    """One line for an error of Hydra's composition (an unknown key or option, a wrong type, an override it
    cannot parse) or of making the run's dir; None for anything else (a bug: its traceback is shown)."""
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    cause = e.__cause__ or e.__context__
    if isinstance(e, MissingConfigException) and e.options is not None and e.missing_cfg_file:
        group, _, name = e.missing_cfg_file.rpartition("/")
        return f"{group}={name}: no such option; the options of {group} are {', '.join(e.options)}"
    if isinstance(e, OverrideParseException):
        return (
            f"cannot read the override {e.override!r}: {e.message.splitlines()[0]}; a value holding = , [ ] ( ) "
            f"or spaces must be quoted, e.g. \"key='a=b'\""
        )
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and getattr(cause, "full_key", None):
        return unknown_key(cause.full_key, cause.object_type)
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        return f"{cause.full_key}: {str(cause.msg).splitlines()[0]}"
    os_error = next((x for x in _chain(e) if isinstance(x, OSError) and x.filename), None)
    if os_error is not None:
        return f"cannot write {os_error.filename}: {os_error.strerror}"
    if isinstance(e, (HydraException, OmegaConfBaseException)):
        return " ".join(str(e).split("\n")[0].split()) or type(e).__name__
    return None


def _chain(e: BaseException | None):
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


# What a single run found in its dir before it started (leave_as_found restores it if the run is refused):
# dir -> {file under .hydra/: its bytes} plus run.log's size, or None for a dir that did not exist.
_found: dict[Path, dict | None] = {}


def note_run_dir(argv: list[str]) -> None:
    """Before Hydra writes anything: note what a single run's explicit hydra.run.dir holds now."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if {"-m", "--multirun"} & set(argv):
        return
    dirs = [a for a in argv if a.startswith("hydra.run.dir=")]
    try:
        value = OverridesParser.create().parse_override(dirs[-1]).value() if dirs else None
    except Exception:  # Hydra reports a bad override itself
        return
    if not isinstance(value, str) or "${" in value:
        return
    out = Path(value).resolve()
    if not out.exists():
        _found[out] = None
        return
    hydra = {p: p.read_bytes() for p in (out / ".hydra").glob("*") if p.is_file()}
    log_file = out / "run.log"
    _found[out] = {"hydra": hydra, "log": log_file.stat().st_size if log_file.is_file() else None}


def leave_as_found(out: Path) -> None:
    """A single run refused for bad input leaves its dir as it was: one it made is removed (with the parents it
    made, while empty); in one it found, Hydra's .hydra/ record and run.log are put back as they were."""
    import shutil

    out = out.resolve()
    for h in list(logging.getLogger().handlers):  # Hydra's run.log handler holds the file open
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve().is_relative_to(out):
            logging.getLogger().removeHandler(h)
            h.close()
    created = [p.resolve() for p in _created]
    if out in created or (out in _found and _found[out] is None):
        shutil.rmtree(out, ignore_errors=True)
        for parent in created:
            if parent != out and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
    elif _found.get(out) is not None:
        before = _found[out]
        for p in (out / ".hydra").glob("*"):
            if p.is_file() and p not in before["hydra"]:
                p.unlink()
        for p, content in before["hydra"].items():
            p.write_bytes(content)
        if before["log"] is None:
            (out / "run.log").unlink(missing_ok=True)
        else:
            os.truncate(out / "run.log", before["log"])


# -- the sweep callbacks (conf/config.yaml: hydra.callbacks) ----------------------------------------------------


def check_swept_keys(config: Any, keys: list[str]) -> None:
    """Refuse a swept key the schema does not have (`model.hiden=3,4`, `+model.hiden=3,4`: Hydra composes the
    sweep's config without its swept values, so check_known_keys cannot see them). Keys under a swept group
    (`model=mlp,wavenet`) are left to each job, whose schema depends on the option."""
    from omegaconf import DictConfig, OmegaConf

    choices = set(config.hydra.runtime.choices or {})
    groups = {k for k in keys if k in choices}
    for key in keys:
        parts = key.split(".")
        if key in choices or parts[0] in groups or parts[0] == "hydra":
            continue
        node = config
        for i, part in enumerate(parts):
            fields = getattr(OmegaConf.get_type(node), "__dataclass_fields__", None)
            if fields is not None and part not in fields:
                raise ConfigError(unknown_key(".".join(parts[: i + 1]), OmegaConf.get_type(node)))
            node = node._get_node(part) if part in node else None
            if not isinstance(node, DictConfig) or node._is_missing() or node._is_none():
                break


_new_sweeps: list[Path] = []  # the sweep dir this process made (SweepCheck) and its new parents, deepest first


def discard_new_sweeps() -> None:
    """A multirun refused for bad input (before any job wrote into it) leaves no sweep dir behind."""
    import shutil

    if _new_sweeps and _new_sweeps[0].is_dir() and not any(p.is_dir() for p in _new_sweeps[0].iterdir()):
        shutil.rmtree(_new_sweeps[0], ignore_errors=True)
        for parent in _new_sweeps[1:]:  # the parents it made, while empty
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()


def refuse(message: str) -> None:
    """Stop a multirun before any job, in one line (an exception in a callback would only become a warning:
    Hydra catches callback errors)."""
    discard_new_sweeps()
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


class SweepCheck(Callback):
    """Hydra callback, before any job starts: refuse a multirun whose jobs would share a dir, or with a key the
    schema does not have; name the sweep dir and give it its id (resume.sweep_id: kept when it is continued);
    write its TensorBoard HParams summary (the swept keys first); keep Optuna's log lines plain."""

    def on_multirun_start(self, config, **kwargs) -> None:
        from omegaconf import OmegaConf

        from . import resume
        from .results import tensorboard

        task, params = config.hydra.overrides.task, dict(config.hydra.sweeper.get("params") or {})
        for block in (config.hydra.sweeper.get("conditional") or {}).values():  # a search's conditional keys
            params |= {k: v for k, v in block.items() if k not in params}
        key = unnamed_swept_key(task, params, config.hydra.job.config.override_dirname.exclude_keys)
        if key:
            refuse(f"a sweep cannot vary `{key}`: it is left out of job dir names, so its jobs would share a dir; "
                   f"run one sweep per {key}")  # fmt: skip
        try:
            check_known_keys(config)
            check_swept_keys(config, swept_keys(task, params))
        except ConfigError as e:
            refuse(str(e))
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            _new_sweeps.extend(p.resolve() for p in [sweep_dir, *sweep_dir.parents] if not p.exists())
            sweep_dir.mkdir(parents=True, exist_ok=True)
            resume.sweep_id(sweep_dir, create=True)
        except OSError as e:
            refuse(f"cannot write {e.filename}: {e.strerror}")
        log.info("run dir: %s", sweep_dir.resolve())
        hp = tensorboard.run_hparams(OmegaConf.to_container(config, resolve=False))  # its keys; values from jobs
        if not any(sweep_dir.glob("events.out.tfevents.*")):  # a continued sweep keeps the summary it wrote
            tensorboard.sweep_hparams(str(sweep_dir), tensorboard.hparam_names(swept_keys(task, params), hp))
        if "optuna" in str(config.hydra.sweeper.get("_target_", "")):
            import optuna

            # Optuna's own handler colours its lines (ANSI codes in a log file); Hydra's handlers print plainly
            optuna.logging.disable_default_handler()
            optuna.logging.enable_propagation()


class SweepReport(Callback):
    """Hydra callback: the results table (and heatmap) of a multirun, written when it ends."""

    def on_multirun_end(self, config, **kwargs) -> None:
        from .results.sweep import build_report

        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            build_report(sweep_dir)
            log.info("run dir: %s", sweep_dir.resolve())


# -- what Hydra knows about a job, and the commands' main wrapper ------------------------------------------------


@dataclass
class Job:
    """What Hydra knows about the job a command runs, as plain values."""

    out: Path  # its dir (hydra.runtime.output_dir)
    single: bool  # a single run, not a sweep's job
    num: int  # the job's number in its sweep (0 for a single run)
    jobs: int  # jobs of its sweep running at once on this machine (1 for a single run)
    overridden: list[str] | None  # keys set on the command line (None in a sweep job: its sweep lists its own)
    trial_id: str  # its name in TensorBoard's HParams table
    sweeper: dict  # hydra.sweeper, resolved
    sweep_dir: str
    overrides: list[str] = field(default_factory=list)  # its command-line (task) overrides, as Hydra records them
    sweep_id: str | None = None  # its sweep's id (resume.sweep_id; None for a single run)

    def trial_report(self, steps: int) -> Any:
        """In a trial job of the project's Optuna sweeper: its search.TrialReport (the trial number is the job
        number); None anywhere else, so a single run never imports Optuna."""
        if self.single or self.sweeper.get("_target_") != SEARCH_SWEEPER:
            return None
        from . import search

        return search.job_trial(self.sweeper, self.sweep_dir, self.num, steps, guard=self.check_owner)

    def state(self) -> str:
        """A sweep job's dir as an earlier session of its sweep left it (resume.job_state); "new" for a run."""
        from . import resume
        from .results import record

        return "new" if self.single else resume.job_state(record.read(self.out), self.out, self.sweep_id)

    def check_owner(self) -> None:
        """Raise resume.StaleJob if this job's sweep dir now holds another sweep."""
        from . import resume

        if not self.single:
            resume.check_owner(self.sweep_dir, self.sweep_id)

    def write_record(self, m: dict[str, Any]) -> None:
        """metrics.json, with the sweep's id in a sweep job (after checking the dir is still its sweep's)."""
        from .results import record

        self.check_owner()
        record.write(self.out, m | ({"sweep_id": self.sweep_id} if self.sweep_id else {}))


def job_of(hc: Any) -> Job:
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from . import resume

    single = hc.mode != RunMode.MULTIRUN
    out = Path(hc.runtime.output_dir)
    overrides = [str(o) for o in hc.overrides.task]
    return Job(
        out=out,
        single=single,
        num=0 if single else int(hc.job.num),
        jobs=1 if single else parallel_jobs(hc),
        overridden=[resume.key_of(o) for o in overrides] if single else None,
        trial_id=run_stamp(out.name) if single else f"#{hc.job.num}",
        sweeper=OmegaConf.to_container(hc.sweeper, resolve=True, enum_to_str=True) if not single else {},
        sweep_dir="" if single else str(hc.sweep.dir),
        overrides=overrides,
        sweep_id=None if single else resume.sweep_id(hc.sweep.dir),
    )


def parallel_jobs(hc: Any) -> int:
    """How many jobs of this sweep run at once on this machine."""
    from omegaconf import OmegaConf

    from .device import cores

    n_jobs = OmegaConf.select(hc, "launcher.n_jobs", default=1) or 1
    n_jobs = cores() if n_jobs < 0 else int(n_jobs)
    trials = OmegaConf.select(hc, "sweeper.n_jobs", default=None)  # a search runs at most this many trials at once
    return min(n_jobs, int(trials)) if trials and trials > 0 else n_jobs


def label_job_lines(num: int) -> None:
    """Prefix a sweep job's console lines with its number (Hydra's launch lines `#N : overrides` say which
    job that is), so lines of jobs running in parallel can be told apart. run.log is left as it is."""
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            h.setFormatter(logging.Formatter(f"[%(asctime)s][#{num}][%(levelname)s] %(message)s"))


def log_to_file(message: str) -> None:
    """An error of a single run goes to stderr once; its log file gets it too, not the console a second time."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler):
            h.handle(record)


def command(task: Callable[[Any, Job], Any]) -> Callable[[], None]:
    """The entry point of a command whose body is `task(cfg, job)`: Hydra composes the config from conf/ and the
    command line (version_base 1.3; `resume=PATH` first becomes the command line that continues that dir,
    resume.command_line). Bad input is one line and exit 2 in a single run, which leaves its dir as it found it
    (nothing, for a new one); in a sweep job a failed metrics.json, and its sweep goes on (so does it after any
    other failure of one job). The task's value goes back to Hydra: a sweeper minimizes it."""
    import hydra
    from hydra.core.hydra_config import HydraConfig

    register_configs()
    register_resolvers()

    @functools.wraps(task)  # Hydra names the job (and its log file) after the task's module: run.log
    def main(cfg):
        job = job_of(HydraConfig.get())
        if not job.single:
            label_job_lines(job.num)
        return run_task(task, cfg, job)

    hydra_main = hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")(main)

    def entry() -> None:
        from . import resume

        try:
            sys.argv[1:] = resume.command_line(sys.argv[1:])
            check_moved_keys(sys.argv[1:])
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        note_run_dir(sys.argv[1:])
        os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors instead of printing them: one line here
        try:
            hydra_main()
        except Exception as e:
            message = hydra_error(e)
            if message is None:
                raise
            discard_new_sweeps()
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)

    return entry


def run_task(task: Callable[[Any, Job], Any], cfg: Any, job: Job) -> Any:
    """task(cfg, job), its failures handled as `command` says."""
    from . import resume

    try:
        check_known_keys(cfg)
        return task(cfg, job)
    except ConfigError as e:
        if job.single:  # one clear line, no traceback, non-zero exit, nothing left behind
            leave_as_found(job.out)
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        log.error("%s", e)
        _record_failure(job, str(e))
    except resume.StaleJob as e:  # its dir is another sweep's now: write nothing there
        log.error("%s", e)
    except OSError as e:
        if job.single and e.filename:  # an unwritable or full disk: the last checkpoint stands
            print(f"error: cannot write {e.filename}: {e.strerror}", file=sys.stderr)
            sys.exit(2)
        if job.single:
            raise
        log.exception("job failed")
        _record_failure(job, f"{type(e).__name__}: {e}")
    except Exception as e:  # in a sweep any failure is this job's alone: record it, let the others go on
        if job.single:
            raise
        log.exception("job failed")
        _record_failure(job, f"{type(e).__name__}: {e}")
    return math.inf


def _record_failure(job: Job, error: str) -> None:
    from . import resume
    from .results import record

    try:
        job.write_record(record.failed(error))
    except resume.StaleJob as e:
        log.error("%s", e)
