"""`python -m makemore.run [overrides]`: config -> data -> model -> train -> outputs; returns the dev loss.

This module only composes. It reads what Hydra knows (the config, whether this is a sweep job, how many jobs
run at once, the overrides) and hands it to plain functions of the other modules, which know no Hydra.
Everything a run writes goes into Hydra's output dir: TensorBoard events, metrics.json, checkpoint.pt,
samples.txt, the plots, .hydra/ and run.log.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .config import (
    SEARCH_SWEEPER,
    ConfigError,
    check_moved_keys,
    register_configs,
    register_resolvers,
    to_dict,
    validate,
)

log = logging.getLogger("makemore")

register_configs()
register_resolvers()


def train_run(
    cfg: DictConfig,
    out: Path,
    *,
    jobs: int = 1,
    overridden: list[str] | None = None,
    trial_id: str = "",
    report: Any = None,
) -> dict[str, Any]:
    """One run into `out`; returns metrics.json's content. Raises ConfigError on bad input, before writing.
    `jobs`: runs sharing this machine now; `overridden`: keys listed first in HParams (None in a sweep job,
    whose sweep lists its own); `trial_id`: the run's name in the HParams table; `report`: a search trial's
    search.TrialReport (gets the dev loss of each evaluation; its pruner may stop the run: status pruned)."""
    import torch

    from . import checkpoint, device, logs, metrics, outputs, schedule, train
    from . import data as data_mod
    from . import engine as engines
    from . import model as model_mod

    started = time.perf_counter()
    validate(cfg)
    conf = to_dict(cfg)
    dev = device.resolve(conf["device"]["name"])
    device.check_precision(conf["train"]["precision"], dev)
    eval_threads = device.threads(cfg.device.threads, jobs)
    data = data_mod.load(
        cfg.data.path, list(cfg.data.splits), cfg.data.seed, cfg.model.block_size, cfg.data.limit_words
    )
    engine = engines.resolve(conf["train"]["engine"], conf["model"])
    form = engines.form(engine)
    model = model_mod.from_config(
        conf["model"], len(data.vocab), seed=cfg.seed, replicas=cfg.train.replicas, form=form, device=dev
    )
    ckpt = out / checkpoint.FILENAME
    progress = checkpoint.resume(ckpt, model, conf, data.vocab.itos, engine) if cfg.resume else train.Progress()

    # From here on the run writes into its dir (bad input has been refused with nothing written).
    log.info("run dir: %s", out)
    log.info("data: %s; examples %s; vocabulary %d", data.source, data.examples(), len(data.vocab))
    log.info(
        "model: %s, %d parameters%s, device %s",
        conf["model"]["kind"],
        model.num_params(),
        f" x {model.replicas} replicas" if model.replicas > 1 else "",
        dev,
    )
    if model.trainable:
        log.info(
            "engine: %s (train.engine=%s), precision %s; optimizer: %s",
            engine,
            conf["train"]["engine"],
            conf["train"]["precision"],
            ", ".join(f"{k} {v}" for k, v in conf["optimizer"].items()),
        )
    tb = logs.TensorBoard(str(out))
    hp = logs.run_hparams(conf)
    tb.hparams_start(hp, None if overridden is None else logs.hparam_names(overridden, hp), trial_id)
    steps = cfg.train.steps if model.trainable else 0
    train_threads = device.training_threads(
        cfg.device.threads, eval_threads, model.step_macs(cfg.train.batch_size or data.examples()["train"])
    )
    torch.set_num_threads(train_threads)
    eval_every = train.eval_interval(cfg.train.eval_every, steps)
    log.info(
        "torch threads: %d for training, %d for evaluation (%d parallel job%s); evaluation every %d steps",
        train_threads,
        eval_threads,
        jobs,
        "s" if jobs > 1 else "",
        eval_every,
    )

    def save(p: train.Progress) -> None:
        checkpoint.save(ckpt, checkpoint.run_state(model, data, conf, p, engine))

    status, error = "ok", None
    try:
        with logs.Console(steps, progress.step) as console:
            progress = train.fit(
                model,
                data,
                steps=steps,
                batch_size=cfg.train.batch_size,
                schedule=schedule.build(cfg.schedule, steps),
                eval_every=eval_every,
                checkpoint_every=cfg.train.checkpoint_every,
                seed=cfg.seed,
                optimizer=conf["optimizer"],
                precision=conf["train"]["precision"],
                progress=progress,
                eval_threads=eval_threads,
                eval_examples=cfg.train.eval_examples,
                hooks=logs.RunLog(tb, console, cfg.train.log_every, save, judge=report),
            )
    except train.Diverged as e:  # reported once, by main
        status, error = "diverged", str(e)
    except train.Pruned as e:
        status, error = "pruned", str(e)
    torch.set_num_threads(eval_threads)
    m = outputs.finish(
        out,
        model,
        data,
        progress,
        tb,
        status=status,
        error=error,
        eval_test=cfg.train.eval_test,
        samples=cfg.samples,
        seed=cfg.seed,
        full_batch=not cfg.train.batch_size,
    )
    m["wall_seconds"] = round(time.perf_counter() - started, 3)  # the whole job: data, training, outputs
    metrics.write(out, m)
    return m


# -- what Hydra knows about this run ----------------------------------------------------------------------


def parallel_jobs(hc: DictConfig) -> int:
    """How many jobs of this sweep run at once on this machine (1 for a single run)."""
    from .device import cores

    if hc.mode != RunMode.MULTIRUN:
        return 1
    n_jobs = OmegaConf.select(hc, "launcher.n_jobs", default=1) or 1
    n_jobs = cores() if n_jobs < 0 else int(n_jobs)
    trials = OmegaConf.select(hc, "sweeper.n_jobs", default=None)  # a search runs at most this many trials at once
    return min(n_jobs, int(trials)) if trials and trials > 0 else n_jobs


def search_report(hc: DictConfig, steps: int) -> Any:
    """In a trial job of the project's Optuna sweeper: its search.TrialReport (the trial number is the job
    number); None anywhere else, so a single run never imports Optuna."""
    if hc.mode != RunMode.MULTIRUN or OmegaConf.select(hc, "sweeper._target_") != SEARCH_SWEEPER:
        return None
    from . import search

    sweeper = OmegaConf.to_container(hc.sweeper, resolve=True, enum_to_str=True)
    return search.job_trial(sweeper, hc.sweep.dir, hc.job.num, steps)


def overridden_keys(hc: DictConfig) -> list[str]:
    """The keys (or groups) the user set on the command line for this run."""
    return [str(o).split("=", 1)[0].lstrip("+~") for o in hc.overrides.task]


def trial_id(hc: DictConfig) -> str:
    """A name short enough for the Trial ID column of TensorBoard's HParams table (~14 characters; the
    columns beside it give the values): a sweep job's number, as Hydra's launch lines, the console labels
    and Optuna number it (`#3`); a single run's start time (`11-22 17:46:36`, with its dir's _N suffix)."""
    from .config import run_stamp

    if hc.mode == RunMode.MULTIRUN:
        return f"#{hc.job.num}"
    return run_stamp(Path(hc.runtime.output_dir).name)


def label_job_lines(hc: DictConfig) -> None:
    """Prefix a sweep job's console lines with its number (Hydra's launch lines `#N : overrides` say which
    job that is), so lines of jobs running in parallel can be told apart. run.log is left as it is."""
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            h.setFormatter(logging.Formatter(f"[%(asctime)s][#{hc.job.num}][%(levelname)s] %(message)s"))


def log_to_file(message: str) -> None:
    """An error of a single run goes to stderr once; run.log gets it too, not the console a second time."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler):
            h.handle(record)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from . import metrics

    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    single = hc.mode != RunMode.MULTIRUN
    if not single:
        label_job_lines(hc)
    try:
        m = train_run(
            cfg,
            out,
            jobs=parallel_jobs(hc),
            overridden=overridden_keys(hc) if single else None,
            trial_id=trial_id(hc),
            report=search_report(hc, cfg.train.steps),
        )
    except ConfigError as e:
        if single:  # one clear line, no traceback, non-zero exit; run.log (of a run resumed with bad input) untouched
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        log.error("%s", e)
        metrics.write(out, metrics.failed(str(e)))
        return math.inf
    except Exception as e:  # in a sweep any failure is this job's alone: record it, let the others go on
        if single:
            raise
        log.exception("job failed")
        metrics.write(out, metrics.failed(f"{type(e).__name__}: {e}"))
        return math.inf
    log.info("run dir: %s", out)
    if m["status"] == "pruned":  # only a search's trials are pruned: its sweeper reads metrics.json
        log.info("%s", m["error"])
        return m["dev_loss"]
    if m["status"] != "ok":
        if single:
            print(f"error: {m['error']}", file=sys.stderr)
            log_to_file(m["error"])
            sys.exit(3)
        log.error("%s", m["error"])
        return math.inf
    return m["dev_loss"]


if __name__ == "__main__":
    try:
        check_moved_keys(sys.argv[1:])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    main()
