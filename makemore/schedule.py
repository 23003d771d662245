"""The learning rate as a function of the step (0-based, the step about to be taken)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

Schedule = Callable[[int], float]


def step_schedule(lrs: Sequence[float], milestones: Sequence[int]) -> Schedule:
    """Piecewise constant: lrs[0] before milestones[0], lrs[1] from milestones[0] on, and so on.
    The lecture: step_schedule([0.1, 0.01], [100000])."""
    lrs, milestones = list(lrs), list(milestones)
    return lambda step: lrs[bisect.bisect_right(milestones, step)]


def cosine_schedule(lr: float, min_lr: float, warmup: int, total: int) -> Schedule:
    """Linear warm-up from 0 to lr over `warmup` steps, then a half cosine from lr down to min_lr at `total`."""

    def f(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))

    return f


def build(cfg, total_steps: int) -> Schedule:
    """From the `schedule` config group: cosine, else step (config.validate admits no other name)."""
    if cfg.name == "cosine":
        return cosine_schedule(cfg.lr, cfg.min_lr, cfg.warmup, total_steps)
    return step_schedule(cfg.lrs, cfg.milestones)
