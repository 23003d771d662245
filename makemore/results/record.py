"""The run record: metrics.json (the one record of a run's result, written by a run and read by the sweep report
and a search) and what a run leaves in its dir once training has ended: samples, plots, the fit report and its
HParams end record.

metrics.json:
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
    warnings                          the diagnoses' one-line warnings (diagnostics.Health), in order; [] if none
    fit                               full-batch runs: fit_check.fit_report
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
from pathlib import Path
from typing import Any

from .. import sample
from ..train import Progress, evaluate
from . import fit_check

log = logging.getLogger("makemore")

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


# -- what a run leaves ------------------------------------------------------------------------------------------


def finish(out: Path, setup, progress: Progress, tb, status: str = "ok", error: str | None = None) -> dict[str, Any]:
    """A run's end (`setup`: its assemble.Setup): the test loss where asked, samples, plots and the fit report of
    a finished or pruned run, the HParams end record; returns the metrics.json record (the caller adds the job's
    wall time and writes it)."""
    model, data, conf = setup.model, setup.data, setup.conf
    ok = status == "ok"
    done = ok or status == "pruned"  # a pruned run ends like a finished one, at its last evaluation
    last = progress.evals[-1] if done and progress.evals else {}
    losses = {s: last.get(s) for s in ("train", "dev", "train_members", "dev_members")}
    if ok and conf["train"]["eval_test"]:
        losses.update({s: v.tolist() for s, v in evaluate(model, data, ("test",)).items()})
    m = summarize(
        {s: losses.get(f"{s}_members" if model.ensemble else s) for s in ("train", "dev", "test")},
        steps=progress.step,
        seconds=progress.seconds,
        params=model.num_params() * (model.replicas if model.ensemble else 1),  # an ensemble's are all its members'
        examples=data.examples(),
        replicas=model.replicas,
        device=str(model.device),
        status=status,
        error=error,
    )
    m["warnings"] = list(progress.warnings)
    if model.ensemble:  # one model: its losses are the ensemble's, replica_losses stay its members'
        m.update({f"{s}_loss": (losses.get(s) or [None])[0] for s in ("train", "dev", "test")})
        m.update({f"{s}_loss_std": None for s in ("train", "dev", "test")}, ensemble=True)
    if done:
        write_samples(out, model, data, conf["samples"], conf["seed"] + 10, progress.step, tb)
        if model.trainable and progress.step > 0:  # an untrained model has no curve and a random map
            draw_plots(model, data.vocab, progress, out, tb)
            if not conf["train"]["batch_size"] and data.layout == "context":  # full batch: the overfit check
                m["fit"] = fit_check.fit_report(model, data)
        log.info(
            "train %.4f  dev %.4f%s  (%d steps, %.1f s of training steps, %.0f steps/s)",
            m["train_loss"],
            m["dev_loss"],
            f"  test {m['test_loss']:.4f}" if m["test_loss"] is not None else "",
            m["steps"],
            m["seconds"],
            steps_per_second(progress.step, progress.seconds),
        )
    if progress.warnings:  # each was logged when it was found, perhaps far up the console
        n = len(progress.warnings)
        log.warning("%d health warning%s, in metrics.json's warnings; TensorBoard: train_health/", n, "s" * (n > 1))
    tb.hparams_end(status)
    tb.close()
    return m


def write_samples(out: Path, model, data, n: int, seed: int, step: int, tb) -> None:
    """samples.txt, the console and TensorBoard: n names, each marked as in the training set or new."""
    words = sample.generate(model, data.vocab, n, seed, replica=None) if n else []
    (out / "samples.txt").write_text("".join(w + "\n" for w in words))
    if words:
        where = sample.classify(words, data.words)
        log.info("samples: %s", ", ".join(words))
        tb.text("visuals/samples", "\n".join(f"    {w}  ({s})" for w, s in zip(words, where)), step)


def draw_plots(model, vocab, progress: Progress, out: Path, tb) -> None:
    """loss.png and embedding.png (replica 0), the latter also in TensorBoard with the projector."""
    from . import plots

    fig = plots.loss_curve(progress.minibatch_losses(), progress.evals)
    plots.save(fig, out / "loss.png")
    plots.close(fig)
    labels = [vocab.label(i) for i in range(len(vocab))]
    C = model.C[0].detach().cpu()  # every trained family names its character embedding table C
    fig = plots.embedding_map(C, labels)
    plots.save(fig, out / "embedding.png")
    tb.figure("visuals/embedding", fig, progress.step)
    plots.close(fig)
    tb.embedding(C, labels, "C", progress.step)
