"""What users read: run names, TensorBoard (read back with tensorboard's own readers and a real TensorBoard
server on 127.0.0.1), the console, divergence, data quirks and the sweep report's refusals."""

from __future__ import annotations

import json
import os
import pty
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from conftest import QUICK, metrics, run_cli, run_dirs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from makemore import data as data_mod
from makemore.config import run_dir
from makemore.report import main as report_main
from makemore.train import DIVERGE_WINDOW, Diverged, check_runaway, divergence_bound, eval_interval

TINY = ("model.emb=2", "train.steps=200", "train.eval_every=100", "train.checkpoint_every=200", "samples=2")


def events(run: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


# -- fast: the rules -------------------------------------------------------------------------------


def test_eval_every_follows_steps_unless_set():
    assert eval_interval(None, 200000) == 10000  # the lecture's run keeps its 20 evaluations
    assert eval_interval(None, 3000) == 150
    assert eval_interval(None, 7) == 1 and eval_interval(None, 0) == 1
    assert eval_interval(500, 3000) == 500  # an explicit value is kept


def test_runaway_bound_and_windows():
    V = 27
    assert divergence_bound(27.0, V) == pytest.approx(270.0)  # the lecture's init starts near 27
    assert divergence_bound(3.0, V) == pytest.approx(10 * torch.log(torch.tensor(27.0)).item())
    lrs = [0.5] * 250
    ok = torch.full((250, 2), 5.0)
    check_runaway(ok, 1000, lrs, 33.0)  # below the bound: nothing
    spike = ok.clone()
    spike[120, 1] = 300.0  # one bad step in a window of 100 does not reach a mean of 33
    check_runaway(spike, 1000, lrs, 33.0)
    bad = ok.clone()
    bad[150:, 1] = 1e7  # replica 1 runs away from step 1150 on
    with pytest.raises(Diverged) as e:
        check_runaway(bad, 1000, lrs, 33.0)
    # windows end on multiples of DIVERGE_WINDOW: steps 1100-1199 hold the first runaway window
    assert e.value.step == 1000 + 2 * DIVERGE_WINDOW - 1 and e.value.loss > 1e6
    assert "at step 1199" in str(e.value) and "lr 0.5" in str(e.value) and "exceeds 33" in str(e.value)


def test_a_leading_byte_order_mark_is_not_a_character(tmp_path):
    words = ["emma", "olivia", "ava", "isabella", "sophia"] * 4
    plain, bom = tmp_path / "plain.txt", tmp_path / "bom.txt"
    plain.write_text("\n".join(words) + "\n", encoding="utf-8")
    bom.write_text("\n".join(words) + "\n", encoding="utf-8-sig")
    assert bom.read_bytes()[:3] == b"\xef\xbb\xbf"
    assert data_mod.read_words(str(bom)) == data_mod.read_words(str(plain)) == words
    a = data_mod.load(str(plain), [0.8, 0.1, 0.1], 42, 3)
    b = data_mod.load(str(bom), [0.8, 0.1, 0.1], 42, 3)
    assert a.vocab.itos == b.vocab.itos and len(b.vocab) == 1 + len(set("".join(words)))


def test_run_dir_names_are_unique_in_the_same_second(tmp_path):
    from makemore import config

    parent = str(tmp_path / "runs")
    first = run_dir(parent, "2026-11-22_10-00-00", "model.hidden=37")
    assert run_dir(parent, "2026-11-22_10-00-00", "model.hidden=37") == first  # memoized within a process
    config._claimed.clear()  # as a second process would see it
    second = run_dir(parent, "2026-11-22_10-00-00", "model.hidden=37")
    assert Path(first).name == "2026-11-22_10-00-00_model.hidden=37" and second == first + "_2"
    assert Path(run_dir(parent, "2026-11-22_10-00-01", "")).name == "2026-11-22_10-00-01"  # no overrides
    long = run_dir(parent, "2026-11-22_10-00-02", ",".join(f"model.k{i}={i}" for i in range(60)))
    assert len(Path(long).name) <= 200 and Path(long).is_dir()


# -- end to end ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_single_run_is_named_by_its_overrides_and_says_where_it_is(tmp_path, words_file):
    r = run_cli(
        "model.hidden=37",
        "model.emb=4",
        "train.steps=300",
        "samples=2",
        "seed=7",
        f"data.path={words_file}",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    (run,) = run_dirs(tmp_path)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_model\.emb=4,model\.hidden=37,samples=2,train\.steps=300", run.name
    ), run.name  # seed and data.path left out, as in sweep job names
    out = r.stdout + r.stderr
    assert out.count(f"run dir: {run}") == 2  # at the start and at the end
    # every run has a curve: 300 steps with the default eval_every give 20 dev points
    acc = events(run)
    assert len(acc.Scalars("loss/dev")) == 20 and "evaluation every 15 steps" in out
    # the Custom Scalars layout: train and dev loss on one chart, then minibatch loss and lr
    from tensorboard.plugins.custom_scalar import layout_pb2

    (tensor,) = acc.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(tensor.tensor_proto.string_val[0])
    charts = [c for cat in layout.category for c in cat.chart]
    assert list(charts[0].multiline.tag) == [r"^loss/train$", r"^loss/dev$"]
    assert [c.title for c in charts[1:]] == ["minibatch loss", "learning rate"]
    # steps/s: the console's last progress line and the summary give the same figure as metrics.json
    sps = metrics(run)["steps_per_second"]
    (bar,) = re.findall(r"step 300/300 .* (\d+) steps/s", out)
    (summary,) = re.findall(r"s of training steps, (\d+) steps/s\)", out)
    assert abs(int(bar) - sps) <= 1 and abs(int(summary) - sps) <= 1  # the same figure, printed with %.0f


@pytest.mark.slow
def test_three_thousand_steps_with_the_default_eval_every_draw_a_dev_curve(tmp_path, words_file):
    r = run_cli(
        "model.hidden=16", "model.emb=4", "train.steps=3000", "samples=0", f"data.path={words_file}", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    (run,) = run_dirs(tmp_path)
    steps = [e.step for e in events(run).Scalars("loss/dev")]
    assert len(steps) >= 3 and steps[-1] == 3000 and steps == sorted(steps)


@pytest.mark.slow
def test_a_runaway_loss_stops_the_run_as_diverged(tmp_path, words_file):
    r = run_cli(*QUICK, "schedule.lrs=[1e6,1e6]", f"data.path={words_file}", cwd=tmp_path)
    assert r.returncode == 3 and "Traceback" not in r.stderr
    out = r.stdout + r.stderr
    assert out.count("training diverged") == 1  # printed once
    line = r.stderr.strip().splitlines()[-1]
    assert (
        line.startswith("error: training diverged: mean minibatch loss") and "at step 99" in line and "lr 1e+06" in line
    )
    (run,) = run_dirs(tmp_path)
    m = metrics(run)
    assert m["status"] == "diverged" and m["dev_loss"] is None and "training diverged" in (run / "run.log").read_text()
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    content = events(run).PluginTagToContent("hparams")[metadata.SESSION_END_INFO_TAG]
    info = plugin_data_pb2.HParamsPluginData.FromString(content)
    assert info.session_end_info.status == api_pb2.STATUS_FAILURE  # the HParams table shows the run as failed


@pytest.mark.slow
def test_capped_periodic_evaluation_keeps_the_final_one_exact(tmp_path, words_file):
    args = (
        "model.hidden=16",
        "model.emb=4",
        "train.steps=300",
        "train.eval_every=100",
        "samples=0",
        f"data.path={words_file}",
    )
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    capped = run_cli(*args, "train.eval_examples=50", cwd=tmp_path / "a")
    full = run_cli(*args, "train.eval_examples=null", cwd=tmp_path / "b")
    assert capped.returncode == 0 and full.returncode == 0, capped.stderr + full.stderr
    (a,), (b,) = run_dirs(tmp_path / "a"), run_dirs(tmp_path / "b")
    assert metrics(a)["dev_loss"] == metrics(b)["dev_loss"] and metrics(a)["train_loss"] == metrics(b)["train_loss"]
    da, db = events(a).Scalars("loss/dev"), events(b).Scalars("loss/dev")
    assert da[-1].value == db[-1].value
    assert da[0].value != db[0].value  # the periodic one scored 50 examples, not all


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def grid_2x2(tmp_path_factory, words_file):
    cwd = tmp_path_factory.mktemp("grid2x2")
    r = run_cli("-m", "model.emb=2,4", "model.hidden=8,16", *TINY[1:], f"data.path={words_file}", cwd=cwd)
    assert r.returncode == 0, r.stderr
    (sweep,) = sorted((cwd / "outputs" / "multirun").iterdir())
    return sweep, r


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
def test_sweep_console_names_its_dir_and_labels_each_jobs_lines(grid_2x2):
    sweep, r = grid_2x2
    out = r.stdout + r.stderr
    assert out.count(f"run dir: {sweep.resolve()}\n") == 2  # the sweep dir, at its start and end
    for n in range(4):
        assert re.search(rf"\[#{n}\]\[INFO\] run dir: {re.escape(str(sweep))}/model\.emb=", out), n
    assert "\x1b[" not in out


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


@pytest.mark.slow
def test_report_refuses_a_dir_that_is_not_one_sweep(grid_2x2, tmp_path, capsys):
    sweep, _ = grid_2x2
    parent = tmp_path / "multirun"
    parent.mkdir()
    import shutil

    for name in ("a", "b"):
        shutil.copytree(sweep, parent / name)
    before = sorted(p.relative_to(parent) for p in parent.rglob("*"))
    assert report_main([str(parent)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not one sweep" in err[0] and "pass one of them" in err[0]
    assert sorted(p.relative_to(parent) for p in parent.rglob("*")) == before  # nothing written
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report_main([str(empty)]) == 2 and "holds no sweep jobs" in capsys.readouterr().err
    assert report_main([str(parent / "a")]) == 0  # one sweep is fine


@pytest.mark.slow
def test_log_lines_do_not_break_the_progress_bar(tmp_path, words_file):
    """On a terminal (a pty), each evaluation line starts on a line of its own, not after the bar."""
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 120-column terminal
    env = dict(os.environ, PYTHONWARNINGS="ignore", COLUMNS="120")
    # steps slow enough (~0.1 ms each) for tqdm to draw its bar between evaluations
    args = ("model.hidden=400", "model.emb=10", "train.steps=6000", "train.eval_every=1000", "samples=0")
    p = subprocess.Popen(
        [sys.executable, "-m", "makemore.run", *args, f"data.path={words_file}"],
        cwd=tmp_path,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            b = os.read(master, 4096)
        except OSError:
            break
        if not b:
            break
        chunks.append(b)
    assert p.wait(240) == 0
    os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    evals = [line for line in text.split("\n") if re.search(r"step \d000: train", line)]
    assert len(evals) == 6 and "%|" in text, text[-2000:]  # the bar was drawn
    for line in evals:
        visible = line.rstrip("\r").split("\r")[
            -1
        ]  # what is left on screen after carriage returns (a pty ends lines with \r\n)
        assert visible.startswith("["), repr(line)
