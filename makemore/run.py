"""`python -m makemore.run [overrides]`: config -> setup -> train -> what the run leaves; returns the dev loss.

This module only composes: Hydra's side is hydra_app.py (the config, the job, the errors), the rest plain
functions of the other modules. Everything a run writes goes into its dir: TensorBoard events, metrics.json,
checkpoint.pt, samples.txt, the plots, .hydra/ and run.log.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from . import assemble, checkpoint, resume, train
from .hydra_app import Job, command, log_to_file
from .results import record
from .results.console import Console
from .results.runlog import RunLog
from .results.tensorboard import TensorBoard, hparam_names, run_hparams

log = logging.getLogger("makemore")


def train_run(cfg, out: Path, job: Job) -> dict[str, Any]:
    """One run into `out`; returns metrics.json's content. Raises ConfigError on bad input, before writing.
    It continues from the checkpoint in `out` with resume=true, and in a sweep's job that an earlier session of
    its sweep interrupted (or, in a search, from the checkpoint of the interrupted trial it reruns)."""
    import torch

    started = time.perf_counter()
    s = assemble.setup(cfg, jobs=job.jobs)
    ckpt = out / checkpoint.FILENAME
    judge = job.trial_report(cfg.train.steps)
    progress = train.Progress()
    adopted = judge is not None and resume.adopt_checkpoint(judge.reruns, out)
    if cfg.resume or adopted or job.state() == "interrupted":
        progress = checkpoint.resume(ckpt, s.model, s.conf, s.data.vocab.itos, s.engine_name)
        if judge is not None:
            judge.replay(progress.evals)
    # From here on the run writes into its dir (bad input has been refused with nothing written).
    log.info("run dir: %s", out)
    assemble.describe(s, job.jobs)
    tb = TensorBoard(str(out), health=s.model.trainable and s.loop.diagnose_every > 0)
    hp = run_hparams(s.conf)
    tb.hparams_start(hp, None if job.overridden is None else hparam_names(job.overridden, hp), job.trial_id)

    def save(p: train.Progress) -> None:
        job.check_owner()
        checkpoint.save(ckpt, checkpoint.run_state(s.model, s.data, s.conf, p, s.engine_name, job.overrides))

    status, error = "ok", None
    try:
        with Console(s.loop.steps, progress.step) as console:
            hooks = RunLog(tb, console, cfg.train.log_every, save, judge=judge)
            progress = train.fit(s.model, s.engine, s.data, s.loop, hooks, progress)
    except train.Diverged as e:  # reported once, by main
        status, error = "diverged", str(e)
    except train.Pruned as e:
        status, error = "pruned", str(e)
    torch.set_num_threads(s.eval_threads)
    m = record.finish(out, s, progress, tb, status, error)
    m["wall_seconds"] = round(time.perf_counter() - started, 3)  # the whole job: data, training, outputs
    job.write_record(m)
    return m


@command
def main(cfg, job: Job) -> float:
    if job.state() == "finished":  # in an earlier session of its sweep: its record stands
        m = record.read(job.out)
        log.info("finished in an earlier session of this sweep (%s): skipped", m["status"])
        return m["dev_loss"] if m["status"] in ("ok", "pruned") else math.inf
    m = train_run(cfg, job.out, job)
    log.info("run dir: %s", job.out)
    if m["status"] == "pruned":  # only a search's trials are pruned: its sweeper reads metrics.json
        log.info("%s", m["error"])
        return m["dev_loss"]
    if m["status"] != "ok":
        if job.single:
            print(f"error: {m['error']}", file=sys.stderr)
            log_to_file(m["error"])
            sys.exit(3)
        log.error("%s", m["error"])
        return math.inf
    return m["dev_loss"]


if __name__ == "__main__":
    main()
