"""`python -m makemore.run [overrides]`: config -> data -> model -> train -> outputs; returns the dev loss.

This module only composes the others. Everything a run writes goes into Hydra's output dir:
TensorBoard events, metrics.json, checkpoint.pt, samples.txt, the plots, .hydra/ and run.log.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, register_configs, register_resolvers, validate

log = logging.getLogger("makemore")

register_configs()
register_resolvers()

# what must match for a resumed run to continue the same trajectory
COMPARED_ON_RESUME = ("data", "model", "schedule", "seed", "train.replicas", "train.batch_size", "train.weight_decay")


def _pick(d: Dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def parallel_jobs() -> int:
    """How many jobs of this sweep run at once on this machine (1 for a single run)."""
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return 1
    from .device import cores

    n_jobs = OmegaConf.select(hc, "launcher.n_jobs", default=1) or 1
    n_jobs = cores() if n_jobs < 0 else int(n_jobs)
    batch = OmegaConf.select(hc, "sweeper.n_jobs", default=None)  # Optuna launches trials in batches of this
    return min(n_jobs, int(batch)) if batch and batch > 0 else n_jobs


def training_threads(cfg: DictConfig, data, replicas: int, available: int) -> int:
    """Torch threads for the training steps of this config (device.threads, else by the step's size)."""
    from . import device as device_mod

    N = cfg.train.batch_size or data.examples()["train"]
    macs = device_mod.step_macs(replicas, N, cfg.model.block_size, cfg.model.emb, cfg.model.hidden, len(data.vocab))
    return device_mod.train_threads(cfg.device.threads, available, macs)


def config_dict(cfg: DictConfig) -> Dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def train_run(cfg: DictConfig, out: Path, started: Optional[float] = None) -> Dict[str, Any]:
    """One run into `out`; returns metrics.json's content. Raises ConfigError on bad input.
    `started` (perf_counter) dates the job's start for its wall_seconds."""
    started = time.perf_counter() if started is None else started
    import torch

    from . import checkpoint, data as data_mod, device as device_mod, logs, model as model_mod, sample, schedule
    from .train import Diverged, Progress, eval_interval, evaluate, fit

    validate(cfg)
    conf = config_dict(cfg)
    dev = device_mod.resolve(conf["device"]["name"])
    jobs = parallel_jobs()
    eval_threads = device_mod.threads(cfg.device.threads, jobs)
    kind = conf["model"]["kind"]
    data = data_mod.load(cfg.data.path, list(cfg.data.splits), cfg.data.seed, cfg.model.block_size, cfg.data.limit_words)
    replicas = cfg.train.replicas if kind == "mlp" else 1
    model = model_mod.build(kind, len(data.vocab), block_size=cfg.model.block_size, emb=cfg.model.emb,
                            hidden=cfg.model.hidden, norm=conf["model"]["norm"], init=conf["model"]["init"],
                            seed=cfg.seed, replicas=replicas, device=dev)
    progress = Progress()
    ckpt_path = out / checkpoint.FILENAME
    if cfg.resume:
        if ckpt_path.is_file():
            state = checkpoint.load(ckpt_path)
            for key in COMPARED_ON_RESUME + (("train.steps",) if conf["schedule"]["name"] == "cosine" else ()):
                if _pick(state["config"], key) != _pick(conf, key):
                    raise ConfigError(f"resume=true: {ckpt_path} was written with a different `{key}`; "
                                      f"resume with the same {key} or use a new hydra.run.dir")
            if state["vocab"] != data.vocab.itos:
                raise ConfigError(f"resume=true: data.path gives a different vocabulary than {ckpt_path} was trained on")
            if state["step"] > cfg.train.steps:
                raise ConfigError(f"resume=true: {ckpt_path} is at step {state['step']}, beyond train.steps={cfg.train.steps}")
            model.load_state_dict(state["model"])
            progress = state["progress"]
            log.info("resuming from %s at step %d", ckpt_path, progress.step)
        else:
            log.warning("resume=true but %s does not exist: starting from scratch (to resume a run, pass its dir "
                        "as hydra.run.dir)", ckpt_path)

    # From here on the run writes into its dir (bad input has been refused with nothing written).
    log.info("run dir: %s", out)
    log.info("data: %s; examples %s; vocabulary %d", data.source, data.examples(), len(data.vocab))
    log.info("model: %s, %d parameters%s, device %s", kind, model.num_params(),
             f" x {replicas} replicas" if replicas > 1 else "", dev)
    tb = logs.TensorBoard(str(out))
    hp = logs.run_hparams(conf)
    # a single run lists the keys the user overrode first; a sweep's jobs leave that to the sweep's summary
    tb.hparams_start(hp, None if jobs_of_sweep() else logs.hparam_names(overridden_keys(), hp), trial_id())
    steps = cfg.train.steps if kind == "mlp" else 0

    def save_checkpoint(p: Progress) -> None:
        checkpoint.save(ckpt_path, {"model": model.state_dict(), "vocab": data.vocab.itos, "config": conf,
                                    "progress": p, "step": p.step, "words": data.words})

    status, error = "ok", None
    try:
        if kind == "bigram":
            model.fit(data.X["train"], data.Y["train"])
            ev = evaluate(model, data)
            progress.evals.append({"step": 0, **{k: v.tolist() for k, v in ev.items()}})
            logs.RunLog(tb, logs.Console(0), cfg.train.log_every, save_checkpoint).on_eval(0, ev)
            save_checkpoint(progress)
        else:
            train_threads = training_threads(cfg, data, replicas, eval_threads)
            torch.set_num_threads(train_threads)
            eval_every = eval_interval(cfg.train.eval_every, steps)
            log.info("torch threads: %d for training, %d for evaluation (%d parallel job%s); evaluation every %d "
                     "steps", train_threads, eval_threads, jobs, "s" if jobs > 1 else "", eval_every)
            sched = schedule.build(cfg.schedule, steps)
            with logs.Console(steps, progress.step) as console:
                hooks = logs.RunLog(tb, console, cfg.train.log_every, save_checkpoint)
                progress = fit(model, data, steps=steps, batch_size=cfg.train.batch_size, schedule=sched,
                               eval_every=eval_every, checkpoint_every=cfg.train.checkpoint_every,
                               seed=cfg.seed, weight_decay=cfg.train.weight_decay, hooks=hooks, progress=progress,
                               eval_threads=eval_threads, eval_examples=cfg.train.eval_examples)
    except Diverged as e:  # reported once, by main
        status, error = "diverged", str(e)
    torch.set_num_threads(eval_threads)

    last = progress.evals[-1] if progress.evals else None
    test = None
    if status == "ok" and cfg.train.eval_test:
        test = evaluate(model, data, ("test",))["test"].tolist()
    per = lambda split: (last or {}).get(split) if status == "ok" else None  # noqa: E731
    metrics = summarize(per("train"), per("dev"), test, progress, model.num_params(), data.examples(), replicas)
    metrics.update(status=status, error=error, device=str(dev))

    if status == "ok":
        words = sample.generate(model, data.vocab, cfg.samples, cfg.seed + 10) if cfg.samples else []
        where = sample.classify(words, data.words)
        (out / "samples.txt").write_text("".join(w + "\n" for w in words))
        if words:
            log.info("samples: %s", ", ".join(words))
            tb.text("visuals/samples", "\n".join(f"    {w}  ({s})" for w, s in zip(words, where)), progress.step)
        if kind == "mlp" and progress.step > 0:  # an untrained model has no curve and a random map
            draw_plots(model, data.vocab, progress, out, tb)
            if not cfg.train.batch_size:
                metrics["fit"] = fit_report(model, data)
        log.info("train %.4f  dev %.4f%s  (%d steps, %.1f s of training steps, %.0f steps/s)", metrics["train_loss"],
                 metrics["dev_loss"], f"  test {metrics['test_loss']:.4f}" if test is not None else "",
                 metrics["steps"], metrics["seconds"], metrics["steps_per_second"])
    tb.hparams_end(status)
    tb.close()
    metrics["wall_seconds"] = round(time.perf_counter() - started, 3)  # the whole job: data, training, outputs
    write_json(out / "metrics.json", metrics)
    return metrics


def draw_plots(model, vocab, progress, out: Path, tb) -> None:
    """loss.png and embedding.png (replica 0), the latter also in TensorBoard with the projector."""
    from . import plots

    fig = plots.loss_curve(progress.minibatch_losses(), progress.evals)
    plots.save(fig, out / "loss.png")
    plots.close(fig)
    labels = [vocab.label(i) for i in range(len(vocab))]
    C = model.params["C"][0].detach().cpu()
    fig = plots.embedding_map(C, labels)
    plots.save(fig, out / "embedding.png")
    tb.figure("visuals/embedding", fig, progress.step)
    plots.close(fig)
    tb.embedding(C, labels, "C", progress.step)


def fit_report(model, data) -> Dict[str, Any]:
    """How well a full-batch run fit its training examples, and which it cannot fit: a context seen
    with several different next characters has no single right answer (the lecture's '...' -> e, o, a)."""
    import torch

    X, Y = data.X["train"], data.Y["train"]
    ctx, inverse = torch.unique(X, dim=0, return_inverse=True)
    pairs, counts = torch.unique(torch.stack([inverse, Y], 1), dim=0, return_counts=True)
    per_ctx = torch.bincount(pairs[:, 0], minlength=len(ctx))  # distinct next chars per context
    ambiguous = (per_ctx[inverse] > 1)
    # the best any model can do on these examples: -mean log of each pair's empirical frequency
    ctx_total = torch.bincount(inverse, minlength=len(ctx)).float()
    floor = -(counts.float() * (counts.float() / ctx_total[pairs[:, 0]]).log()).sum() / len(Y)
    with torch.no_grad():
        x = X.to(model.device).unsqueeze(0).expand(model.replicas, -1, -1)
        pred = model.forward(x).argmax(-1)[0].cpu()  # replica 0
    vocab = data.vocab
    rows = []
    for c in torch.nonzero(per_ctx > 1).flatten().tolist():
        nexts = pairs[pairs[:, 0] == c, 1].tolist()
        rows.append("".join(vocab.label(i) for i in ctx[c].tolist()) + " -> " + ", ".join(vocab.label(i) for i in nexts))
    report = {"examples": len(Y), "ambiguous_examples": int(ambiguous.sum()), "loss_floor": float(floor),
              "correct_top1": int((pred == Y).sum()), "ambiguous_contexts": rows}
    log.info("fit: %d/%d examples predicted exactly; %d examples have an ambiguous context (no model can fit "
             "them all; the lowest possible loss is %.4f): %s", report["correct_top1"], len(Y),
             report["ambiguous_examples"], report["loss_floor"], "; ".join(rows))
    return report


def summarize(train, dev, test, progress, params: int, examples: Dict[str, int], replicas: int) -> Dict[str, Any]:
    """metrics.json: losses (the replicas' mean, with std and each replica's when K > 1) and speed."""
    import statistics

    def mean(xs):
        return None if xs is None else float(statistics.fmean(xs))

    def std(xs):
        return None if xs is None or len(xs) < 2 else float(statistics.stdev(xs))

    from .logs import steps_per_second

    sps = steps_per_second(progress)
    m = {"train_loss": mean(train), "dev_loss": mean(dev), "test_loss": mean(test), "steps": progress.step,
         "params": params, "seconds": round(progress.seconds, 3), "steps_per_second": round(sps, 1),
         "model_steps_per_second": round(sps * replicas, 1), "examples": examples, "replicas": replicas}
    if replicas > 1:
        m.update(train_loss_std=std(train), dev_loss_std=std(dev), test_loss_std=std(test),
                 replica_losses={"train": train, "dev": dev, "test": test})
    return m


def failed_job(out: Path, error: str) -> float:
    log.error("%s", error)
    write_json(out / "metrics.json", {"status": "failed", "error": error, "dev_loss": None, "train_loss": None})
    return math.inf


def jobs_of_sweep() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def overridden_keys() -> List[str]:
    """The keys (or groups) the user set on the command line for this run."""
    return [str(o).split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task]


def trial_id() -> str:
    """A name short enough for the Trial ID column of TensorBoard's HParams table (~14 characters; the
    columns beside it give the values): a sweep job's number, as Hydra's launch lines, the console labels
    and Optuna number it (`#3`); a single run's start time (`11-22 17:46:36`, with its dir's _N suffix)."""
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return f"#{hc.job.num}"
    name = Path(hc.runtime.output_dir).name  # <yyyy>-<mm>-<dd>_<HH>-<MM>-<SS>[_<overrides>][_N]
    date, _, rest = name.partition("_")
    clock, suffix = rest[:8].replace("-", ":"), re.search(r"_(\d+)$", name)
    return f"{date[5:]} {clock}" + (f" _{suffix.group(1)}" if suffix else "")


def label_job_lines() -> None:
    """Prefix a sweep job's console lines with its number (Hydra's launch lines `#N : overrides` say which
    job that is), so lines of jobs running in parallel can be told apart. run.log is left as it is."""
    hc = HydraConfig.get()
    label = f"#{hc.job.num}"
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            h.setFormatter(logging.Formatter(f"[%(asctime)s][{label}][%(levelname)s] %(message)s"))


def error_once(message: str) -> None:
    """A single run's error: one line on stderr (not also on the console log), and into run.log."""
    print(f"error: {message}", file=sys.stderr)
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler):
            h.handle(record)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    out = Path(HydraConfig.get().runtime.output_dir)
    single = not jobs_of_sweep()
    if not single:
        label_job_lines()
    try:
        metrics = train_run(cfg, out, time.perf_counter())
    except ConfigError as e:
        if single:  # one clear line, no traceback, non-zero exit; run.log (of a run resumed with bad input) untouched
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        return failed_job(out, str(e))
    except Exception as e:  # in a sweep any failure is this job's alone: record it, let the others go on
        if single:
            raise
        log.exception("job failed")
        return failed_job(out, f"{type(e).__name__}: {e}")
    log.info("run dir: %s", out)
    if metrics["status"] != "ok":
        if single:
            error_once(metrics["error"])
            sys.exit(3)
        log.error("%s", metrics["error"])
        return math.inf
    return metrics["dev_loss"]


if __name__ == "__main__":
    main()
