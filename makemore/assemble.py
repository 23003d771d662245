"""setup(cfg): a config -> the data, model, engine, device, threads and loop settings of a run.

One set-up for every way in: `python -m makemore.run`, `python -m makemore.lr_find` and the Python API (a
notebook) all call it, so they train the same thing at the same speed. `cfg` is a composed config (a DictConfig
from Hydra's compose API or a run) or the schema's dataclasses; nothing here imports Hydra.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from . import device as device_mod
from . import engine as engines
from . import models, schedule
from .config import to_dict, validate
from .data import Dataset, load
from .train import Loop, eval_interval

log = logging.getLogger("makemore")


@dataclass
class Setup:
    conf: dict[str, Any]  # the resolved config as plain dicts (what the run records)
    data: Dataset
    model: models.LanguageModel
    engine_name: str  # engine.resolve's answer: fast | autograd | count (a counted model: no engine)
    engine: Any  # engine.make's, or None for a counted model
    device: torch.device
    loop: Loop
    train_threads: int  # torch threads for training steps (set by setup)
    eval_threads: int  # torch threads for evaluations and the outputs


def load_data(cfg) -> Dataset:
    """The data a run's model reads: the examples of its family's layout (contexts or sequence rows)."""
    d, kind = cfg.data, to_dict(cfg.model)["kind"]
    return load(d.path, list(d.splits), d.seed, cfg.model.block_size, d.limit_words, models.inputs(kind))


EVAL_FLOOR = 10_000  # a periodic evaluation's smallest subset per split: a dev curve with ~0.01 noise


def periodic_examples(cap: int | None, eval_every: int, batch_size: int) -> int | None:
    """Examples per split a periodic evaluation scores: at most what training reads between two of them
    (eval_every x batch_size, at least EVAL_FLOOR), within train.eval_examples (None: all). Then a short run's
    periodic evaluations cost a fraction of its training instead of most of its time; the last one scores all."""
    if cap is None or batch_size == 0:  # all, asked for; or full batch, where every step reads every example
        return cap
    return min(cap, max(EVAL_FLOOR, eval_every * batch_size))


def loop_settings(cfg, steps: int, eval_threads: int | None = None) -> Loop:
    """The loop's settings from the config's train group; `steps`: what the model trains (0 for a counted one)."""
    t = cfg.train
    eval_every = eval_interval(t.eval_every, steps)
    return Loop(
        steps=steps,
        batch_size=t.batch_size,
        schedule=schedule.build(cfg.schedule, steps),
        seed=cfg.seed,
        eval_every=eval_every,
        checkpoint_every=t.checkpoint_every,
        eval_examples=periodic_examples(t.eval_examples, eval_every, t.batch_size),
        eval_threads=eval_threads,
        diagnose_every=eval_every if t.diagnose_every is None else t.diagnose_every,
    )


def setup(cfg, jobs: int = 1, data: Dataset | None = None) -> Setup:
    """Validate `cfg` (ConfigError: one line naming the key) and build the run; `jobs`: runs sharing this machine
    now (their threads share its cores); `data`: an already loaded dataset to reuse. Sets torch's threads for
    training (device.threads, or the automatic policy of device.training_threads)."""
    validate(cfg)
    conf = to_dict(cfg)
    dev = device_mod.resolve(conf["device"]["name"])
    device_mod.check_precision(conf["train"]["precision"], dev)
    data = data or load_data(cfg)
    t = conf["train"]
    model = models.build(
        conf["model"], len(data.vocab), seed=cfg.seed, replicas=t["replicas"], ensemble=t["ensemble"], device=dev
    )
    name = engines.resolve(conf["train"]["engine"], model)
    batch = cfg.train.batch_size or data.examples()["train"]
    engine = (
        None if name == "count" else engines.make(name, model, batch, conf["optimizer"], t["precision"], t["compile"])
    )
    eval_threads = device_mod.threads(cfg.device.threads, jobs)
    train_threads = device_mod.training_threads(cfg.device.threads, eval_threads, model.step_macs(batch))
    torch.set_num_threads(train_threads)
    steps = cfg.train.steps if model.trainable else 0
    loop = loop_settings(cfg, steps, eval_threads)
    return Setup(conf, data, model, name, engine, dev, loop, train_threads, eval_threads)


def describe(s: Setup, jobs: int = 1) -> None:
    """The run's set-up in a few log lines."""
    conf, model = s.conf, s.model
    log.info("data: %s; examples %s; vocabulary %d", s.data.source, s.data.examples(), len(s.data.vocab))
    many = f" x {model.replicas} replicas" if model.replicas > 1 else ""
    many += ", one ensemble (train.ensemble: its losses and samples are of their mean probability)" * model.ensemble
    log.info("model: %s, %d parameters%s, device %s", conf["model"]["kind"], model.num_params(), many, s.device)
    if s.engine is not None:
        optimizer = ", ".join(f"{k} {v}" for k, v in conf["optimizer"].items())
        compiled = ", compiled" if s.engine_name == "autograd" and conf["train"]["compile"] else ""
        log.info(
            "engine: %s (train.engine=%s%s), precision %s; optimizer: %s",
            s.engine_name,
            conf["train"]["engine"],
            compiled,
            conf["train"]["precision"],
            optimizer,
        )
    log.info(
        "torch threads: %d for training, %d for evaluation (%d parallel job%s); evaluation every %d steps",
        s.train_threads,
        s.eval_threads,
        jobs,
        "s" if jobs > 1 else "",
        s.loop.eval_every,
    )
