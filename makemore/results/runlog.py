"""The training loop's hooks for a run: minibatch, evaluation and diagnosis scalars to TensorBoard, progress and
health warnings to the console, checkpoints, and a search trial's pruning decision."""

from __future__ import annotations

import torch

from ..train import Hooks, Progress, Pruned
from . import record
from .console import Console
from .tensorboard import TensorBoard


class RunLog(Hooks):
    """The training loop's hooks for a run: TensorBoard, console, checkpoints; in a search's trial `judge`
    (search.TrialReport) gets the dev loss of each evaluation and may stop the run there (train.Pruned)."""

    def __init__(self, tb: TensorBoard, console: Console, log_every: int, save_checkpoint, judge=None):
        self.tb, self.console, self.log_every, self.save_checkpoint = tb, console, log_every, save_checkpoint
        self.judge = judge
        self.window = [0.0, 0.0, 0]  # sums of loss and log10 loss, and steps, since the last point

    def on_segment(self, start: int, losses: torch.Tensor, lrs: list[float], progress: Progress) -> None:
        """One point per window of log_every steps, windows ending on multiples of log_every
        (a window may span segments)."""
        mean = losses.mean(1)  # over replicas
        log10 = losses.log10().mean(1)
        L, pos = self.log_every, 0
        for b in range((start // L + 1) * L, start + len(lrs) + 1, L):
            self._add(mean[pos : b - start], log10[pos : b - start])
            s, s10, n = self.window
            self.tb.scalars(
                b, {"minibatch/loss": s / n, "minibatch/log10_loss": s10 / n, "minibatch/lr": lrs[b - start - 1]}
            )
            self.window, pos = [0.0, 0.0, 0], b - start
        self._add(mean[pos:], log10[pos:])
        sps = record.steps_per_second(progress.step, progress.seconds)
        self.console.update(start + len(lrs), float(mean[-50:].mean()), lrs[-1], sps)

    def _add(self, loss: torch.Tensor, log10: torch.Tensor) -> None:
        self.window[0] += float(loss.sum())
        self.window[1] += float(log10.sum())
        self.window[2] += loss.numel()

    def on_eval(self, step: int, losses: dict[str, torch.Tensor]) -> None:
        values = {}
        for split, v in losses.items():
            values[f"loss/{split}"] = v.mean().item()
            if v.numel() > 1:
                values[f"loss/{split}_std"] = v.std().item()
                values.update({f"replicas/{split}_{k}": x for k, x in enumerate(v.tolist())})
        self.tb.scalars(step, values)
        parts = "  ".join(
            f"{s} {v.mean().item():.4f}" + (f" ± {v.std().item():.4f}" if v.numel() > 1 else "")
            for s, v in losses.items()
        )
        self.console.message(f"step {step}: {parts}")
        reason = self.judge(step, values["loss/dev"]) if self.judge is not None else None
        if reason:
            raise Pruned(step, reason)

    def on_checkpoint(self, progress: Progress) -> None:
        self.save_checkpoint(progress)

    def on_diagnose(self, step: int, report) -> None:
        self.tb.health(step, report)
        for text in report.warnings:
            self.console.warning(text)
