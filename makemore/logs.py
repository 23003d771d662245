"""What a run shows while it trains: TensorBoard events and a console progress bar or log lines.

Writing one TensorBoard event costs ~60 us here (protobuf + CRC in Python), as much as a training
step, so minibatch losses are written as one event per `log_every` steps (the window's means), after
each segment of steps and never inside it.

Tag names decide what TensorBoard shows first: Time Series lists groups (the tag's prefix) in
alphabetical order, so the curves are `loss/` (evaluations) and `minibatch/` (training loss, lr), and
pictures sort after them under `visuals/`. The HParams tab takes its columns from one experiment summary
in the logdir, lists the hyper-parameters marked `differs` first and ticks the first five: a single run
writes every key with the ones the user overrode marked; a sweep writes one summary in its root dir
(`sweep_hparams`) listing only the keys it varies, and its jobs write none of their own.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable

import torch

from . import metrics
from .train import Hooks, Progress, Pruned

log = logging.getLogger("makemore")


def flat_hparams(cfg: dict, prefix: str = "") -> dict[str, object]:
    """Nested config dict -> {"model.hidden": 200, ...} with values TensorBoard's HParams accepts."""
    out: dict[str, object] = {}
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


# what the HParams tab reports for each run: the last value of these scalars (the final evaluation)
METRICS = {"loss/train": "train loss", "loss/dev": "dev loss"}
# the Custom Scalars tab: train and dev loss on one chart, then the minibatch loss and the lr
LAYOUT = {
    "makemore": {
        "loss: train and dev": ["Multiline", [r"^loss/train$", r"^loss/dev$"]],
        "minibatch loss": ["Multiline", [r"^minibatch/loss$"]],
        "learning rate": ["Multiline", [r"^minibatch/lr$"]],
    }
}


def run_hparams(conf: dict) -> dict[str, object]:
    """The HParams record of a run: every knob, flat, and every schedule key whatever the schedule
    (null where it does not apply), so runs with different schedules share one set of columns."""
    from .config import optimizer_keys, schedule_keys

    hp = flat_hparams({k: conf[k] for k in ("data", "model", "schedule", "optimizer", "train", "seed") if k in conf})
    for key in schedule_keys() + optimizer_keys():
        hp.setdefault(key, "null")
    return hp


def hparam_names(keys: Iterable[str], hparams: dict[str, object]) -> list[str]:
    """Override keys or groups -> the hparams they set (`schedule=cosine` sets schedule.name)."""
    group_key = {"schedule": "schedule.name", "optimizer": "optimizer.name", "model": "model.kind"}
    names = []
    for k in keys:
        k = group_key.get(k, k)
        if k in hparams and k not in names:
            names.append(k)
    return names


def _hparams_summary(tag: str, **plugin_data):
    """One HParams plugin record as a Summary (tensorboard's own summary helpers import TensorFlow)."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    content = plugin_data_pb2.HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, **plugin_data)
    meta = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString())
    )
    return Summary(value=[Summary.Value(tag=tag, metadata=meta)])


def experiment_summary(hparams: dict[str, object], first: Iterable[str]):
    """The HParams experiment: these hparams, `first` ones marked `differs` (TensorBoard lists and
    ticks those first), and the train and dev loss metrics."""
    from tensorboard.plugins.hparams import api_pb2, metadata

    first = set(first)
    infos = [api_pb2.HParamInfo(name=k, differs=k in first) for k in hparams]
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=t), display_name=n) for t, n in METRICS.items()]
    return _hparams_summary(
        metadata.EXPERIMENT_TAG, experiment=api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics)
    )


def sweep_hparams(sweep_dir: str, swept: list[str]) -> None:
    """A sweep's one experiment summary, in its root dir: the swept keys only. TensorBoard ticks the first
    five listed; constant keys there would push the loss columns off the screen (their values are in the
    job dir names and each job's .hydra/config.yaml)."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(sweep_dir)
    summary = experiment_summary(dict.fromkeys(swept), swept)
    writer.add_event(event_pb2.Event(wall_time=time.time(), summary=summary))
    writer.close()


class TensorBoard:
    """One run's events, all in the run dir itself (so TensorBoard names the run by its dir)."""

    def __init__(self, logdir: str):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=logdir)
        self.writer.add_custom_scalars(LAYOUT)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Several scalars in one event (one protobuf, one CRC)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        summary = Summary(value=[Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()])
        self.writer.file_writer.add_summary(summary, step)

    def hparams_start(self, hparams: dict[str, object], first: Iterable[str] | None = None, trial_id: str = "") -> None:
        """The run's HParams record (its metrics are the `loss/` scalars, so a run shows in the table
        while it trains), named `trial_id` in the table (default: the run's dir); with `first`, also
        the experiment summary listing those keys first."""
        from google.protobuf import struct_pb2
        from tensorboard.plugins.hparams import metadata, plugin_data_pb2

        if first is not None:
            self.writer.file_writer.add_summary(experiment_summary(hparams, first))
        info = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time(), group_name=trial_id)
        for k, v in hparams.items():
            value = struct_pb2.Value()
            if isinstance(v, bool):
                value.bool_value = v
            elif isinstance(v, (int, float)):
                value.number_value = v
            else:
                value.string_value = str(v)
            info.hparams[k].CopyFrom(value)
        self.writer.file_writer.add_summary(_hparams_summary(metadata.SESSION_START_INFO_TAG, session_start_info=info))

    def hparams_end(self, status: str) -> None:
        """TensorBoard's status of the run: ok -> Success; pruned -> Unknown (stopped early on purpose: neither
        a success nor a failure, and a status of its own to filter on); diverged, failed -> Failure."""
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        code = {"ok": api_pb2.STATUS_SUCCESS, "pruned": api_pb2.STATUS_UNKNOWN}.get(status, api_pb2.STATUS_FAILURE)
        info = plugin_data_pb2.SessionEndInfo(status=code, end_time_secs=time.time())
        self.writer.file_writer.add_summary(_hparams_summary(metadata.SESSION_END_INFO_TAG, session_end_info=info))

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self.writer.add_text(tag, text, step)

    def figure(self, tag: str, fig, step: int = 0) -> None:
        self.writer.add_figure(tag, fig, step, close=False)

    def embedding(self, matrix: torch.Tensor, labels: list[str], tag: str, step: int = 0) -> None:
        self.writer.add_embedding(matrix, metadata=labels, tag=tag, global_step=step)

    def close(self) -> None:
        self.writer.close()


class Console:
    """A tqdm bar on a terminal; otherwise a plain log line about every 10% or 30 s.

    Speed is training steps per second of step time (evaluation and logging excluded), the same
    figure as metrics.json's steps_per_second. Use it as a context manager: while it is open, log
    lines go through tqdm.write above the bar instead of over it."""

    def __init__(self, total: int, start: int = 0, tty: bool | None = None):
        self.total, self.tty = total, sys.stderr.isatty() if tty is None else tty
        self.bar = None
        self.last_line = time.monotonic()
        self.next_pct = 10
        self._redirect = None
        if self.tty and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, file=sys.stderr)

    def __enter__(self) -> Console:
        if self.bar is not None:
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._redirect = logging_redirect_tqdm(tqdm_class=type(self.bar))
            self._redirect.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, step: int, loss: float, lr: float, steps_per_second: float) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix_str(f"loss={loss:.4f}, lr={lr:.3g}, {steps_per_second:.0f} steps/s", refresh=False)
            return
        pct = 100 * step / max(self.total, 1)
        if pct >= self.next_pct or time.monotonic() - self.last_line > 30 or step == self.total:
            log.info("step %d/%d  loss %.4f  lr %.3g  %.0f steps/s", step, self.total, loss, lr, steps_per_second)
            self.last_line = time.monotonic()
            while self.next_pct <= pct:
                self.next_pct += 10

    def message(self, text: str) -> None:
        log.info(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None


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
        sps = metrics.steps_per_second(progress.step, progress.seconds)
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
