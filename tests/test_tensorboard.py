"""What TensorBoard shows of runs and sweeps (results/tensorboard.py, results/runlog.py): the minibatch windows,
the HParams records and their order, read back with TensorBoard's own readers and served by TensorBoard."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from conftest import QUICK, events, run_cli, run_dirs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from makemore.results.console import Console
from makemore.results.runlog import RunLog
from makemore.results.tensorboard import TensorBoard
from makemore.train import Progress

TINY = ("model.emb=2", "train.steps=200", "train.eval_every=100", "train.checkpoint_every=200", "samples=2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
def test_tensorboard_serves_the_grids_swept_keys_first(grid_2x2):
    sweep, _ = grid_2x2
    port = _free_port()
    tb = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(sweep), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}/data/plugin/hparams"
        exp = None
        for _ in range(60):  # TensorBoard loads the logdir in the background
            try:
                exp = _post(f"{base}/experiment", {"experimentName": ""})
                groups = _post(
                    f"{base}/session_groups",
                    {
                        "experimentName": "",
                        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
                        "colParams": [],
                        "startIndex": 0,
                        "sliceSize": 100,
                    },
                )
                if exp.get("hparamInfos") and len(groups.get("sessionGroups", [])) == 4:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        names = [h["name"] for h in exp["hparamInfos"]]
        assert set(names[:5]) >= {"model.emb", "model.hidden"}  # TensorBoard ticks the first five
        assert all(h["differs"] for h in exp["hparamInfos"] if h["name"] in ("model.emb", "model.hidden"))
        assert {"loss/dev", "loss/train"} <= {m["name"]["tag"] for m in exp["metricInfos"]}
        # Trial IDs are short enough to read: the job numbers
        assert sorted(g["name"] for g in groups["sessionGroups"]) == ["#0", "#1", "#2", "#3"]
        for g in groups["sessionGroups"]:
            dev = [m for m in g["metricValues"] if m["name"]["tag"] == "loss/dev"]
            assert dev and 1.0 < dev[0]["value"] < 5.0
    finally:
        tb.terminate()
        tb.wait(10)


@pytest.mark.slow
def test_single_run_lists_its_overrides_first_and_every_schedule_key(tmp_path, words_file):
    r = run_cli(*QUICK, "model.hidden=37", f"data.path={words_file}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (run,) = run_dirs(tmp_path)
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    contents = events(run).PluginTagToContent("hparams")

    def plugin_data(tag):
        return plugin_data_pb2.HParamsPluginData.FromString(contents[tag])

    infos = plugin_data(metadata.EXPERIMENT_TAG).experiment.hparam_infos
    differs = {h.name for h in infos if h.differs}
    assert {"model.hidden", "model.emb", "train.steps"} <= differs and "model.block_size" not in differs
    start = plugin_data(metadata.SESSION_START_INFO_TAG).session_start_info
    # a step-schedule run still has every cosine key (null), so a mixed logdir keeps its columns
    for key in ("schedule.lr", "schedule.min_lr", "schedule.warmup", "schedule.lrs", "schedule.milestones"):
        assert key in start.hparams
    assert start.hparams["schedule.lr"].string_value == "null"


@pytest.mark.parametrize("segments", [[150, 150], [150, 30, 120, 70]], ids=["150+150", "150+30+120+70"])
def test_runlog_windows_span_segments(tmp_path, segments):
    """One minibatch point per log_every steps, at the multiples of log_every, whatever the segments: a window
    split across segments averages all its steps (replicas too), the lr is the window's last step's, and the
    unfinished window at the end writes nothing."""
    L, K = 100, 2
    total = sum(segments)
    g = torch.Generator().manual_seed(0)
    losses = 0.5 + 3 * torch.rand(total, K, generator=g)
    lrs = [0.1 / (1 + s) for s in range(total)]
    tb = TensorBoard(str(tmp_path))
    log = RunLog(tb, Console(total, tty=False), L, save_checkpoint=lambda progress: None)
    progress, start = Progress(), 0
    for S in segments:
        progress.step, progress.seconds = start + S, 0.01 * (start + S)
        log.on_segment(start, losses[start : start + S], lrs[start : start + S], progress)
        start += S
    tb.close()
    ea = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    ea.Reload()
    loss, log10, lr = (ea.Scalars(f"minibatch/{t}") for t in ("loss", "log10_loss", "lr"))
    ends = list(range(L, total + 1, L))
    assert [e.step for e in loss] == [e.step for e in log10] == [e.step for e in lr] == ends
    x = losses.double()
    for i, b in enumerate(ends):
        window = x[b - L : b]
        assert loss[i].value == pytest.approx(window.mean().item(), rel=1e-6), b
        assert log10[i].value == pytest.approx(window.log10().mean().item(), rel=1e-6), b
        assert lr[i].value == pytest.approx(lrs[b - 1], rel=1e-6), b
