"""A run's TensorBoard events: scalars, the HParams records, the Custom Scalars layout, text, figures and the
embedding projector.

Writing one event costs about as much as a lecture-sized training step (protobuf and a CRC in Python), so the
minibatch losses are written as one event per `log_every` steps (runlog.py), after each segment of steps and
never inside it.

Tag names decide what TensorBoard shows first: Time Series lists groups (the tag's prefix) in
alphabetical order, so the curves are `loss/` (evaluations) and `minibatch/` (training loss, lr), and
pictures sort after them under `visuals/`. The diagnoses (diagnostics.py) are one group, `train_health/`, between
the two: per layer `train_health/<layer>/<figure>` (the histograms of activations and gradients under the same
names, on the Histograms tab), per parameter `train_health/grad_ratio/<name>` and `train_health/update_ratio/<name>`.

The HParams tab takes its columns from one experiment summary in the logdir, lists the hyper-parameters marked
`differs` first and ticks the first five: a single run writes every key with the ones the user overrode marked; a
sweep writes one summary in its root dir (`sweep_hparams`) listing only the keys it varies, and its jobs write none of
their own.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import torch

from ..diagnostics import UPDATE_TARGET


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
# the Custom Scalars tab: the dev and the train loss, then the minibatch loss and the lr; the two losses have a chart
# each, because a Multiline chart colours its lines by run only (one colour, one marker for a run's train and dev)
LAYOUT = {
    "makemore": {
        "dev loss": ["Multiline", [r"^loss/dev$"]],
        "train loss": ["Multiline", [r"^loss/train$"]],
        "minibatch loss": ["Multiline", [r"^minibatch/loss$"]],
        "learning rate": ["Multiline", [r"^minibatch/lr$"]],
    }
}


# with diagnoses, a Custom Scalars category of their own: every parameter's update ratio against the rule of thumb
HEALTH = "train_health"  # the diagnoses' tag group: it sorts after loss/ and minibatch/, before visuals/
HEALTH_LAYOUT = {
    HEALTH: {
        "update/data ratio, log10 (guide: -3)": [
            "Multiline",
            [rf"^{HEALTH}/update_ratio/", rf"^{HEALTH}/update_ratio_guide$"],
        ],
        "saturated tanh units (share)": ["Multiline", [rf"^{HEALTH}/[^/]+/saturated$"]],
        "dead tanh units (share)": ["Multiline", [rf"^{HEALTH}/[^/]+/dead$"]],
        "activation std": ["Multiline", [rf"^{HEALTH}/[^/]+/act_std$"]],
        "grad/data ratio": ["Multiline", [rf"^{HEALTH}/grad_ratio/"]],
    }
}


def run_hparams(conf: dict) -> dict[str, object]:
    """The HParams record of a run: every knob, flat, and every key of every schedule, optimizer and model family
    (null where it does not apply), so runs with different ones share one set of columns."""
    from ..config import model_keys, optimizer_keys, schedule_keys

    hp = flat_hparams({k: conf[k] for k in ("data", "model", "schedule", "optimizer", "train", "seed") if k in conf})
    for key in schedule_keys() + optimizer_keys() + model_keys():
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

    def __init__(self, logdir: str, health: bool = False):
        """health: the run is diagnosed (its Custom Scalars layout has the health charts)."""
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=logdir)
        self.writer.add_custom_scalars(LAYOUT | HEALTH_LAYOUT if health else LAYOUT)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Several scalars in one event (one protobuf, one CRC)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        summary = Summary(value=[Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()])
        self.writer.file_writer.add_summary(summary, step)

    def health(self, step: int, report) -> None:
        """A diagnosis (diagnostics.Report): its scalars in one event, a guide series at the rule of thumb for the
        update-ratio chart, and the histograms."""
        values = {f"{HEALTH}/loss": report.loss, f"{HEALTH}/update_ratio_guide": UPDATE_TARGET}
        for layer, figures in report.layers.items():
            values |= {f"{HEALTH}/{layer}/{k}": v for k, v in figures.items()}
        values |= {f"{HEALTH}/grad_ratio/{k}": v for k, v in report.grad_ratio.items()}
        values |= {f"{HEALTH}/update_ratio/{k}": v for k, v in report.update_ratio.items()}
        self.scalars(step, values)
        for tag, t in report.histograms.items():
            t = t[torch.isfinite(t)]
            if t.numel():
                self.writer.add_histogram(f"{HEALTH}/{tag}", t, step)

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
