"""The Hydra glue, in one place: the config groups, resolvers, the run and sweep dir layout, moved keys, the
sweep callbacks and the one main wrapper of the commands (run, lr_find). Everything below the commands is plain
Python that knows no Hydra; this module reads what Hydra knows and hands it on.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
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
    """A sweep job's dir (its `hydra.sweep.subdir`): its overrides (UNNAMED_KEYS left out), plus a `/seed=N`
    level when the seed is swept, so that jobs differing only in seed never share a dir. Optuna's trials may
    repeat a point, so there the trial number leads: `<num>_<overrides>`."""
    seeds = [o for o in (task_overrides or []) if str(o).startswith("seed=")]
    name = override_dirname or "defaults"
    if "optuna" in str(sweeper or "").lower():
        return short_name(f"{num}_{override_dirname}")
    return short_name(name) + "/" + seeds[0] if seeds else short_name(name)


def sweep_root(job: Path) -> Path:
    """The sweep dir a job dir belongs to (job_name's layout): <sweep>/<subdir> or <sweep>/<subdir>/seed=N."""
    return job.parent.parent if job.name.startswith("seed=") else job.parent


JOB_DEPTHS = (1, 2)  # job dirs lie this many levels below their sweep dir


def run_stamp(name: str) -> str:
    """`11-22 17:46:36` (`_2` ...) from a run dir's name `<yyyy>-<mm>-<dd>_<HH>-<MM>-<SS>[_<overrides>][_N]`."""
    import re

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
    return name[: MAX_NAME - 9] + "~" + hashlib.sha1(name.encode()).hexdigest()[:8]


def run_dir(parent: str, stamp: str, overrides: str) -> str:
    """A single run's dir, `<parent>/<stamp>_<overrides>` (just the stamp without overrides), created here so
    that two runs started in the same second with the same overrides get distinct dirs (`_2`, `_3`, ...).
    Memoized: Hydra may resolve hydra.run.dir more than once in a process."""
    import os

    key = (parent, stamp, overrides)
    if key not in _claimed:
        name = short_name(f"{stamp}_{overrides}" if overrides else stamp)
        os.makedirs(parent, exist_ok=True)
        for n in range(1, 10000):
            path = os.path.join(parent, name if n == 1 else f"{name}_{n}")
            try:
                os.mkdir(path)  # atomic: of two processes, one gets it
                break
            except FileExistsError:
                continue
        _claimed[key] = path
    return _claimed[key]


def register_resolvers() -> None:
    import os

    from omegaconf import OmegaConf

    # a per-process value for run and sweep dir names: two runs started in the same second differ
    OmegaConf.register_new_resolver("mm.pid", lambda: os.getpid(), use_cache=True, replace=True)
    OmegaConf.register_new_resolver("mm.job_name", job_name, replace=True)
    OmegaConf.register_new_resolver("mm.run_dir", run_dir, replace=True)
    OmegaConf.register_new_resolver("mm.unnamed_keys", lambda: list(UNNAMED_KEYS), replace=True)


# -- the sweep callbacks (conf/config.yaml: hydra.callbacks) ----------------------------------------------------


class SweepCheck(Callback):
    """Hydra callback, before any job starts: refuse a multirun whose jobs would share a dir; name the sweep
    dir; write its TensorBoard HParams summary (the swept keys first); keep Optuna's log lines plain."""

    def on_multirun_start(self, config, **kwargs) -> None:
        from omegaconf import OmegaConf

        from .results import tensorboard

        task, params = config.hydra.overrides.task, dict(config.hydra.sweeper.get("params") or {})
        for block in (config.hydra.sweeper.get("conditional") or {}).values():  # a search's conditional keys
            params |= {k: v for k, v in block.items() if k not in params}
        key = unnamed_swept_key(task, params, config.hydra.job.config.override_dirname.exclude_keys)
        if key:
            print(
                f"error: a sweep cannot vary `{key}`: it is left out of job dir names, so its jobs would "
                f"share a dir; run one sweep per {key}",
                file=sys.stderr,
            )
            sys.exit(2)  # an exception here would only become a warning (Hydra catches callback errors)
        sweep_dir = Path(config.hydra.sweep.dir)
        log.info("run dir: %s", sweep_dir.resolve())
        sweep_dir.mkdir(parents=True, exist_ok=True)
        hp = tensorboard.run_hparams(
            OmegaConf.to_container(config, resolve=False)
        )  # for its keys; values come from jobs
        if not any(sweep_dir.glob("events.out.tfevents.*")):  # a continued search keeps the summary it wrote
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

    def trial_report(self, steps: int) -> Any:
        """In a trial job of the project's Optuna sweeper: its search.TrialReport (the trial number is the job
        number); None anywhere else, so a single run never imports Optuna."""
        if self.single or self.sweeper.get("_target_") != SEARCH_SWEEPER:
            return None
        from . import search

        return search.job_trial(self.sweeper, self.sweep_dir, self.num, steps)


def job_of(hc: Any) -> Job:
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    single = hc.mode != RunMode.MULTIRUN
    out = Path(hc.runtime.output_dir)
    return Job(
        out=out,
        single=single,
        num=0 if single else int(hc.job.num),
        jobs=1 if single else parallel_jobs(hc),
        overridden=[str(o).split("=", 1)[0].lstrip("+~") for o in hc.overrides.task] if single else None,
        trial_id=run_stamp(out.name) if single else f"#{hc.job.num}",
        sweeper=OmegaConf.to_container(hc.sweeper, resolve=True, enum_to_str=True) if not single else {},
        sweep_dir="" if single else str(hc.sweep.dir),
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
    command line (version_base 1.3); bad input (ConfigError) is one line and exit 2 in a single run, and a failed
    metrics.json in a sweep job, whose sweep goes on (so does it after any other failure of one job). The task's
    value goes back to Hydra: a sweeper minimizes it."""
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from .results import record

    register_configs()
    register_resolvers()

    @functools.wraps(task)  # Hydra names the job (and its log file) after the task's module: run.log
    def main(cfg):
        job = job_of(HydraConfig.get())
        if not job.single:
            label_job_lines(job.num)
        try:
            return task(cfg, job)
        except ConfigError as e:
            if job.single:  # one clear line, no traceback, non-zero exit
                print(f"error: {e}", file=sys.stderr)
                sys.exit(2)
            log.error("%s", e)
            record.write(job.out, record.failed(str(e)))
        except Exception as e:  # in a sweep any failure is this job's alone: record it, let the others go on
            if job.single:
                raise
            log.exception("job failed")
            record.write(job.out, record.failed(f"{type(e).__name__}: {e}"))
        return math.inf

    hydra_main = hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")(main)

    def entry() -> None:
        try:
            check_moved_keys(sys.argv[1:])
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        hydra_main()

    return entry
