"""`python -m makemore.lr_find [overrides]`: the lecture's learning-rate finder.

From a fresh init, take lr_find.steps steps of the configured optimizer and engine with lr = 10^e, e rising
linearly from lr_find.start to lr_find.end (the lecture: 1000 steps, -3 to 0), and record each step's
minibatch loss. The curve is smoothed with a debiased exponential moving average (beta 0.98) and the suggestion is

    suggested lr = 10^e_min / 2,  e_min = the exponent where the smoothed loss is lowest

i.e. half the lr at the minimum: there the loss is already about to blow up, and a run at that lr
must also survive its noisier early steps. (On names.txt with the lecture config: minimum near 0.2,
suggestion near 0.1, the lecture's choice.) Writes lr_find.json, lr_find.png and the
curve to TensorBoard in its run dir.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from .config import ConfigError
from .hydra_app import Job, command

log = logging.getLogger("makemore")

BACK_OFF = math.log10(2)  # decades below the smoothed minimum: half its lr
BETA = 0.98


def smooth(losses: list[float], beta: float = BETA) -> list[float]:
    """Debiased exponential moving average (as fastai's lr finder); non-finite values stay non-finite."""
    out, avg = [], 0.0
    for i, x in enumerate(losses, 1):
        if not math.isfinite(x):
            out.append(math.inf)
            avg = math.inf
            continue
        avg = beta * avg + (1 - beta) * x
        out.append(avg / (1 - beta**i))
    return out


def suggest(exponents: list[float], smoothed: list[float], back_off: float = BACK_OFF) -> float | None:
    finite = [(s, e) for s, e in zip(smoothed, exponents) if math.isfinite(s)]
    if not finite:
        return None
    _, e_min = min(finite)
    return 10 ** max(e_min - back_off, exponents[0])


def find_lr(setup, steps: int, start: float, end: float) -> tuple[list[float], list[float]]:
    """The sweep itself on a fresh run set-up (assemble.Setup): one step per exponent, stopping early once the loss
    is no longer finite."""
    model, engine, data, loop = setup.model, setup.engine, setup.data, setup.loop
    exps = torch.linspace(start, end, steps).tolist()
    Xtr, Ytr = data.X["train"].to(model.device), data.Y["train"].to(model.device)
    N = loop.batch_size or Xtr.shape[0]
    g = torch.Generator().manual_seed(loop.seed)
    if loop.batch_size:
        ix = torch.randint(0, Xtr.shape[0], (steps, model.replicas, N), generator=g).to(model.device)
        rows, targets = engine.batches(Xtr, Ytr, ix)
    else:  # full batch: one batch, reused by every step
        all_rows = torch.arange(Xtr.shape[0], device=model.device).expand(1, model.replicas, N)
        rows, targets = engine.batches(Xtr, Ytr, all_rows)
        rows, targets = rows * steps, targets * steps
    picked = torch.empty(steps, *engine.slot, device=model.device)
    for i, e in enumerate(exps):
        engine.step(rows[i], targets[i], 10**e, picked[i])
    losses = (-picked.view(steps, -1).mean(1)).tolist()
    for i, x in enumerate(losses):  # a diverged run stays diverged: cut the curve there
        if not math.isfinite(x):
            exps, losses = exps[:i], losses[:i]
            break
    return exps, losses


def run(cfg, out: Path) -> dict:
    """The finder on `cfg` (its model, optimizer, engine and batch size; lr_find.* for the sweep) into `out`."""
    from . import assemble
    from .results import plots
    from .results.record import write_json
    from .results.tensorboard import TensorBoard

    lf = cfg.lr_find
    if not lf.end > lf.start:
        raise ConfigError(f"lr_find.end must be > lr_find.start, got start={lf.start}, end={lf.end}")
    if lf.steps < 10:
        raise ConfigError(f"lr_find.steps must be >= 10, got {lf.steps}")
    setup = assemble.setup(cfg)
    if setup.engine is None:
        raise ConfigError(f"lr_find needs a model trained by steps; model={setup.conf['model']['kind']} is counted")
    log.info("engine: %s; optimizer: %s", setup.engine_name, setup.conf["optimizer"]["name"])
    exps, losses = find_lr(setup, lf.steps, lf.start, lf.end)
    smoothed = smooth(losses)
    suggested = suggest(exps, smoothed)
    result = {
        "suggested_lr": suggested,
        "exponents": exps,
        "losses": losses,
        "smoothed": smoothed,
        "rule": "half the lr where the smoothed loss is lowest",
    }
    write_json(out / "lr_find.json", result)
    fig = plots.lr_finder(exps, losses, smoothed, suggested)
    plots.save(fig, out / "lr_find.png")
    tb = TensorBoard(str(out))
    tb.figure("lr_find", fig)
    plots.close(fig)
    for i, (e, x, s) in enumerate(zip(exps, losses, smoothed)):
        tb.scalars(i, {"lr_find/exponent": e, "lr_find/loss": x, "lr_find/smoothed": s if math.isfinite(s) else 0.0})
    tb.close()
    if suggested is None:
        log.warning("no finite loss at any lr: nothing to suggest")
    else:
        log.info(
            "suggested lr: %.3g (smoothed loss lowest at lr %.3g); plot %s",
            suggested,
            10 ** (math.log10(suggested) + BACK_OFF),
            out / "lr_find.png",
        )
    return result


@command
def main(cfg, job: Job) -> float | None:
    return run(cfg, job.out)["suggested_lr"]


if __name__ == "__main__":
    main()
