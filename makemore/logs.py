"""What a run shows while it trains: TensorBoard events and a console progress bar or log lines.

Writing one TensorBoard event costs ~60 us here (protobuf + CRC in Python), as much as a training
step, so minibatch losses are written as one event per `log_every` steps (the window's means), after
each segment of steps and never inside it.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Dict, List, Optional

import torch

from .train import Hooks, Progress

log = logging.getLogger("makemore")


def flat_hparams(cfg: dict, prefix: str = "") -> Dict[str, object]:
    """Nested config dict -> {"model.hidden": 200, ...} with values TensorBoard's HParams accepts."""
    out: Dict[str, object] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_hparams(v, key + "."))
        elif isinstance(v, (bool, int, float, str)):
            out[key] = v
        elif v is None:
            out[key] = "null"
        else:
            out[key] = str(v)
    return out


class TensorBoard:
    """One run's events, all in the run dir itself (so TensorBoard names the run by its dir)."""

    def __init__(self, logdir: str):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=logdir)

    def scalars(self, step: int, values: Dict[str, float]) -> None:
        """Several scalars in one event (one protobuf, one CRC)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        summary = Summary(value=[Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()])
        self.writer.file_writer.add_summary(summary, step)

    def hparams(self, hparams: Dict[str, object], metrics: Dict[str, float], step: int) -> None:
        """The HParams dashboard's record, written into this run's dir (SummaryWriter.add_hparams
        would open a second, timestamped run for it)."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        exp, ssi, sei = hparams_summary(hparams, {f"hparams/{k}": v for k, v in metrics.items()})
        for s in (exp, ssi, sei):
            self.writer.file_writer.add_summary(s)
        self.scalars(step, {f"hparams/{k}": v for k, v in metrics.items()})

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self.writer.add_text(tag, text, step)

    def figure(self, tag: str, fig, step: int = 0) -> None:
        self.writer.add_figure(tag, fig, step, close=False)

    def embedding(self, matrix: torch.Tensor, labels: List[str], tag: str, step: int = 0) -> None:
        self.writer.add_embedding(matrix, metadata=labels, tag=tag, global_step=step)

    def close(self) -> None:
        self.writer.close()


class Console:
    """A tqdm bar on a terminal; otherwise a plain log line about every 10% or 30 s."""

    def __init__(self, total: int, start: int = 0, tty: Optional[bool] = None):
        self.total, self.tty = total, sys.stderr.isatty() if tty is None else tty
        self.bar = None
        self.last_line, self.t0, self.step0 = time.monotonic(), time.monotonic(), start
        self.next_pct = 10
        if self.tty and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, file=sys.stderr)

    def update(self, step: int, loss: float, lr: float) -> None:
        rate = (step - self.step0) / max(time.monotonic() - self.t0, 1e-9)
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}", refresh=False)
            return
        pct = 100 * step / max(self.total, 1)
        if pct >= self.next_pct or time.monotonic() - self.last_line > 30 or step == self.total:
            log.info("step %d/%d  loss %.4f  lr %.3g  %.0f steps/s", step, self.total, loss, lr, rate)
            self.last_line = time.monotonic()
            while self.next_pct <= pct:
                self.next_pct += 10

    def message(self, text: str) -> None:
        log.info(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class RunLog(Hooks):
    """The training loop's hooks for a run: TensorBoard, console, checkpoints."""

    def __init__(self, tb: TensorBoard, console: Console, log_every: int, save_checkpoint):
        self.tb, self.console, self.log_every, self.save_checkpoint = tb, console, log_every, save_checkpoint
        self.window = [0.0, 0.0, 0]  # sums of loss and log10 loss, and steps, since the last point

    def on_segment(self, start: int, losses: torch.Tensor, lrs: List[float], progress: Progress) -> None:
        """One point per window of log_every steps, windows ending on multiples of log_every
        (a window may span segments)."""
        mean = losses.mean(1)  # over replicas
        log10 = losses.log10().mean(1)
        L, pos = self.log_every, 0
        for b in range((start // L + 1) * L, start + len(lrs) + 1, L):
            self._add(mean[pos:b - start], log10[pos:b - start])
            s, s10, n = self.window
            self.tb.scalars(b, {"train/minibatch_loss": s / n, "train/minibatch_log10_loss": s10 / n,
                                "train/lr": lrs[b - start - 1]})
            self.window, pos = [0.0, 0.0, 0], b - start
        self._add(mean[pos:], log10[pos:])
        self.console.update(start + len(lrs), float(mean[-50:].mean()), lrs[-1])

    def _add(self, loss: torch.Tensor, log10: torch.Tensor) -> None:
        self.window[0] += float(loss.sum())
        self.window[1] += float(log10.sum())
        self.window[2] += loss.numel()

    def on_eval(self, step: int, losses: Dict[str, torch.Tensor]) -> None:
        values = {}
        for split, v in losses.items():
            values[f"loss/{split}"] = v.mean().item()
            if v.numel() > 1:
                values[f"loss/{split}_std"] = v.std().item()
                values.update({f"replicas/{split}_{k}": x for k, x in enumerate(v.tolist())})
        self.tb.scalars(step, values)
        parts = "  ".join(f"{s} {v.mean().item():.4f}" + (f" ± {v.std().item():.4f}" if v.numel() > 1 else "")
                          for s, v in losses.items())
        self.console.message(f"step {step}: {parts}")

    def on_checkpoint(self, progress: Progress) -> None:
        self.save_checkpoint(progress)
