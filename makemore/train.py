"""The training loop: batches -> fast step -> evaluate -> log -> checkpoint.

The loop runs in segments of at most CHUNK steps that end on every multiple of CHUNK, eval_every and
checkpoint_every. A segment draws all its batch indices in one call, runs the fast steps with no host
sync, and only then reads its losses back (one sync per segment) to log them and check for divergence.
Because segment boundaries depend only on the step number and the batch generator is saved in each
checkpoint (always written at a segment boundary), a resumed run draws exactly the batches of an
uninterrupted one and ends with bit-identical losses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from .data import Dataset
from .model import MLP
from .schedule import Schedule
from .step import FastStep

CHUNK = 1000


class Diverged(RuntimeError):
    def __init__(self, step: int, lr: float, loss: float):
        super().__init__(f"training diverged: loss {loss} at step {step} (lr {lr:g}); try a smaller schedule lr")
        self.step, self.lr, self.loss = step, lr, loss


@dataclass
class Progress:
    """What the loop has done so far; saved in checkpoints."""

    step: int = 0
    seconds: float = 0.0  # time spent in training steps (not evaluation)
    batch_rng: Optional[torch.Tensor] = None  # state of the batch generator at `step`
    losses: List[torch.Tensor] = field(default_factory=list)  # per segment (S, K) minibatch losses
    lrs: List[float] = field(default_factory=list)
    evals: List[Dict] = field(default_factory=list)  # {"step", "train": [K], "dev": [K]}

    def minibatch_losses(self) -> torch.Tensor:
        return torch.cat(self.losses) if self.losses else torch.empty(0, 1)


class Hooks:
    """Callbacks of the loop; the defaults do nothing (a notebook needs none)."""

    def on_segment(self, start: int, losses: torch.Tensor, lrs: List[float], progress: Progress) -> None: ...

    def on_eval(self, step: int, losses: Dict[str, torch.Tensor]) -> None: ...

    def on_checkpoint(self, progress: Progress) -> None: ...


def evaluate(model, data: Dataset, splits=("train", "dev"), threads: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Full losses of each split; with `threads`, evaluation (large products) uses that many."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        return {s: model.evaluate(data.X[s], data.Y[s]).cpu() for s in splits}
    finally:
        torch.set_num_threads(previous)


def fit(model: MLP, data: Dataset, *, steps: int, batch_size: int, schedule: Schedule, eval_every: int,
        checkpoint_every: int, seed: int, weight_decay: float = 0.0, hooks: Optional[Hooks] = None,
        progress: Optional[Progress] = None, eval_threads: Optional[int] = None) -> Progress:
    """Train `model` (all its replicas) for `steps` SGD steps; resume from `progress` if given."""
    hooks = hooks or Hooks()
    progress = progress or Progress()
    dev = model.device
    K, V = model.replicas, model.vocab_size
    Xtr, Ytr = data.X["train"].to(dev), data.Y["train"].to(dev)
    n_train = Xtr.shape[0]
    N = batch_size or n_train  # 0 = full batch
    step_fn = FastStep(model, N, weight_decay)
    gen = torch.Generator().manual_seed(seed)
    if progress.batch_rng is not None:
        gen.set_state(progress.batch_rng)
    while progress.step < steps:
        start = progress.step
        end = min(steps, *(start // every * every + every for every in (CHUNK, eval_every, checkpoint_every)))
        S = end - start
        if batch_size:
            ix = torch.randint(0, n_train, (S, K, N), generator=gen).to(dev)
            rows, targets = step_fn.batches(Xtr, Ytr, ix)
        else:  # full batch: every step sees all the examples, so build them once
            rows, targets = step_fn.batches(Xtr, Ytr, torch.arange(n_train, device=dev).expand(1, K, N))
            rows, targets = rows * S, targets * S
        lrs = [schedule(s) for s in range(start, end)]
        picked = torch.empty(S, *targets[0].shape, device=dev)  # log p(target) per step and example
        t0 = time.perf_counter()
        for r, y, lr, out in zip(rows, targets, lrs, picked.unbind(0)):
            step_fn(r, y, lr, out)
        losses = -picked.view(S, K, N).mean(2).cpu()  # the segment's one host sync
        progress.seconds += time.perf_counter() - t0
        bad = ~torch.isfinite(losses)
        if bad.any():
            i = int(bad.any(1).nonzero()[0])
            raise Diverged(start + i, lrs[i], float(losses[i][bad[i]][0]))
        progress.step = end
        progress.batch_rng = gen.get_state()
        progress.losses.append(losses)
        progress.lrs.extend(lrs)
        hooks.on_segment(start, losses, lrs, progress)
        if end % eval_every == 0 or end == steps:
            ev = evaluate(model, data, threads=eval_threads)
            progress.evals.append({"step": end, **{k: v.tolist() for k, v in ev.items()}})
            hooks.on_eval(end, ev)
        if end % checkpoint_every == 0 or end == steps:
            hooks.on_checkpoint(progress)
    if not progress.evals or progress.evals[-1]["step"] != steps:  # steps=0, or nothing left to train
        ev = evaluate(model, data, threads=eval_threads)
        progress.evals.append({"step": steps, **{k: v.tolist() for k, v in ev.items()}})
        hooks.on_eval(steps, ev)
        hooks.on_checkpoint(progress)  # so even an untrained model can be sampled and resumed
    return progress
