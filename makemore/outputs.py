"""What a run leaves in its dir once training has ended: samples, plots, the fit report, its HParams end record,
and the metrics.json record (returned; the caller adds the job's wall time and writes it)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from . import analysis, metrics, sample
from .train import Progress, evaluate

log = logging.getLogger("makemore")


def finish(
    out: Path,
    model,
    data,
    progress: Progress,
    tb,
    *,
    status: str = "ok",
    error: str | None = None,
    eval_test: bool = False,
    samples: int = 0,
    seed: int = 0,
    full_batch: bool = False,
) -> dict[str, Any]:
    ok = status == "ok"
    done = ok or status == "pruned"  # a pruned run ends like a finished one, at its last evaluation
    last = progress.evals[-1] if done and progress.evals else {}
    losses = {"train": last.get("train"), "dev": last.get("dev"), "test": None}
    if ok and eval_test:
        losses["test"] = evaluate(model, data, ("test",))["test"].tolist()
    m = metrics.summarize(
        losses,
        steps=progress.step,
        seconds=progress.seconds,
        params=model.num_params(),
        examples=data.examples(),
        replicas=model.replicas,
        device=str(model.device),
        status=status,
        error=error,
    )
    if done:
        write_samples(out, model, data, samples, seed + 10, progress.step, tb)
        if model.trainable and progress.step > 0:  # an untrained model has no curve and a random map
            draw_plots(model, data.vocab, progress, out, tb)
            if full_batch:
                m["fit"] = analysis.fit_report(model, data)
        log.info(
            "train %.4f  dev %.4f%s  (%d steps, %.1f s of training steps, %.0f steps/s)",
            m["train_loss"],
            m["dev_loss"],
            f"  test {m['test_loss']:.4f}" if m["test_loss"] is not None else "",
            m["steps"],
            m["seconds"],
            metrics.steps_per_second(progress.step, progress.seconds),
        )
    tb.hparams_end(status)
    tb.close()
    return m


def write_samples(out: Path, model, data, n: int, seed: int, step: int, tb) -> None:
    """samples.txt, the console and TensorBoard: n names, each marked as in the training set or new."""
    words = sample.generate(model, data.vocab, n, seed) if n else []
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
    C = model.params["C"][0].detach().cpu()
    fig = plots.embedding_map(C, labels)
    plots.save(fig, out / "embedding.png")
    tb.figure("visuals/embedding", fig, progress.step)
    plots.close(fig)
    tb.embedding(C, labels, "C", progress.step)
