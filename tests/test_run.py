"""`python -m makemore.run` end to end, through a subprocess as a user runs it."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FAMILIES, QUICK, events, metrics, run_cli, run_dirs, run_module

from makemore import checkpoint

pytestmark = pytest.mark.slow  # every test here runs the commands in subprocesses


def test_short_run_writes_every_output(tmp_path, words_file):
    r = run_cli(*QUICK, f"data.path={words_file}", "train.eval_test=true", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (run,) = run_dirs(tmp_path)
    m = metrics(run)
    assert set(m) >= {
        "train_loss",
        "dev_loss",
        "test_loss",
        "steps",
        "params",
        "seconds",
        "steps_per_second",
        "model_steps_per_second",
        "examples",
    }
    assert m["steps"] == 300 and m["params"] == 27 * 4 + (12 + 1) * 16 + 17 * 27
    assert 1.5 < m["dev_loss"] < 3.5 and m["test_loss"] is not None and m["steps_per_second"] > 0
    assert set(m["examples"]) == {"train", "dev", "test"}
    for name in ("checkpoint.pt", "samples.txt", "loss.png", "embedding.png", ".hydra/config.yaml", "run.log"):
        assert (run / name).is_file(), name
    samples = (run / "samples.txt").read_text().splitlines()
    assert len(samples) == 5 and samples[0] in r.stdout + r.stderr + (run / "run.log").read_text()
    state = checkpoint.load(run)
    assert state["step"] == 300 and state["vocab"][0] == "." and state["config"]["model"]["hidden"] == 16

    acc = events(run)
    tags = acc.Tags()
    assert {"minibatch/loss", "minibatch/log10_loss", "minibatch/lr", "loss/train", "loss/dev"} <= set(tags["scalars"])
    dev = acc.Scalars("loss/dev")
    assert [e.step for e in dev] == [100, 200, 300]
    assert dev[-1].value == pytest.approx(m["dev_loss"], rel=1e-6)
    assert len(acc.Scalars("minibatch/loss")) == 3  # one point per train.log_every=100 steps
    assert "visuals/samples/text_summary" in tags["tensors"]
    plugins = acc.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in plugins and "_hparams_/session_start_info" in plugins
    # no stray extra run dirs for hparams: every event file sits in the run dir itself
    assert [p.parent for p in run.rglob("events.out.tfevents.*")] == [run]


def test_run_from_another_working_directory_with_a_relative_data_path(tmp_path, words_file):
    (tmp_path / "sub").mkdir()
    rel = os.path.relpath(words_file, tmp_path / "sub")  # relative to where the user types the command
    r = run_cli(*QUICK, f"data.path={rel}", "train.steps=0", cwd=tmp_path / "sub")
    assert r.returncode == 0, r.stderr
    run = run_dirs(tmp_path / "sub")[0]
    m = metrics(run)
    assert m["steps"] == 0 and m["dev_loss"] > 3  # steps=0 just evaluates the initial model
    assert (run / "checkpoint.pt").is_file()  # and keeps it, so it can be sampled from
    r = run_module("makemore.sample", str(run), "-n", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_replicas_report_mean_and_std(tmp_path, words_file):
    r = run_cli(*QUICK, f"data.path={words_file}", "train.replicas=3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    m = metrics(run_dirs(tmp_path)[0])
    dev = m["replica_losses"]["dev"]
    assert len(dev) == 3 and len(set(dev)) == 3
    assert m["dev_loss"] == pytest.approx(sum(dev) / 3)
    assert m["dev_loss_std"] == pytest.approx(statistics.stdev(dev)) and m["dev_loss_std"] > 0
    tags = events(run_dirs(tmp_path)[0]).Tags()["scalars"]
    assert {"loss/dev_std", "replicas/dev_0", "replicas/dev_2"} <= set(tags)


@pytest.mark.parametrize(
    "options, steps",
    [
        ((), 60000),  # the fast engine's fused SGD
        (("optimizer.momentum=0.9", "optimizer.nesterov=true", "optimizer.weight_decay=0.001"), 60000),
        (("optimizer=adamw", "schedule.lrs=[0.01,0.001]"), 60000),
        (("train.engine=autograd", "optimizer=adamw", "schedule.lrs=[0.01,0.001]", "model.norm=batch"), 12000),
        (("model.layers=2", "model.direct=true", "optimizer.momentum=0.5"), 12000),  # autograd
        (("model=wavenet", "model.block_size=4", "model.dropout=0.2", "optimizer=adamw"), 1500),  # torch's generator
    ],
    ids=[
        "fast-sgd",
        "fast-nesterov",
        "fast-adamw",
        "autograd-adamw-batchnorm",
        "autograd-layers-direct-momentum",
        "autograd-wavenet-dropout",
    ],
)
def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path, words_file, options, steps):
    args = (
        "model.hidden=16",
        "model.emb=4",
        f"train.steps={steps}",
        f"train.eval_every={steps // 3}",
        f"train.checkpoint_every={steps // 30}",
        "samples=0",
        f"schedule.milestones=[{steps // 2}]",
        f"data.path={words_file}",
        *options,
    )
    assert_resumes_bit_for_bit(tmp_path, args, steps)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_resumes_after_sigkill_bit_for_bit(tmp_path, words_file, family):
    """Each family (its dropout too: torch's generator is in the checkpoint) with 2 replicas, AdamW."""
    steps = 240
    args = (*FAMILIES[family], "optimizer=adamw", "schedule.lrs=[0.003]", "schedule.milestones=[]", "samples=2",
            f"train.steps={steps}", f"train.eval_every={steps // 3}", f"train.checkpoint_every={steps // 30}",
            "train.replicas=2", f"data.path={words_file}")  # fmt: skip
    assert_resumes_bit_for_bit(tmp_path, args, steps)
    assert len((tmp_path / "cut" / "samples.txt").read_text().splitlines()) == 2
    r = run_module("makemore.sample", str(tmp_path / "cut"), "-n", "4", "--prefix", "ma", "--temperature", "0.8",
                   cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert [line.split()[0][:2] for line in r.stdout.splitlines()[:4]] == ["ma"] * 4


def assert_resumes_bit_for_bit(tmp_path: Path, args, steps: int) -> None:
    """A run killed (SIGKILL) after its first checkpoint and resumed ends bit-identical to an uninterrupted one."""
    full = run_cli(*args, "hydra.run.dir=full", cwd=tmp_path)
    assert full.returncode == 0, full.stderr

    cmd = [sys.executable, "-m", "makemore.run", *args, "hydra.run.dir=cut"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "cut" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "cut" / "metrics.json").exists()
    cut_at = checkpoint.load(ckpt)["step"]
    assert 0 < cut_at < steps

    resumed = run_cli(*args, "hydra.run.dir=cut", "resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout + resumed.stderr
    a, b = metrics(tmp_path / "full"), metrics(tmp_path / "cut")
    assert (a["train_loss"], a["dev_loss"], a["steps"]) == (b["train_loss"], b["dev_loss"], b["steps"])
    full_state, cut_state = checkpoint.load(tmp_path / "full"), checkpoint.load(tmp_path / "cut")
    for k, v in full_state["model"].items():
        assert torch.equal(v, cut_state["model"][k]), k


@pytest.mark.parametrize(
    "options, engine",
    [
        (("optimizer=adamw", "schedule.lrs=[0.01,0.001]"), "fast"),
        (("optimizer.momentum=0.9", "optimizer.nesterov=true"), "fast"),
        (("model.layers=3", "model.init=scaled"), "fast"),
        (("model.layers=3", "model.init=scaled", "train.engine=autograd"), "autograd"),
        (("model.direct=true",), "fast"),
        (("model.direct=true", "train.engine=autograd"), "autograd"),
        (("train.engine=autograd", "model.norm=layer", "optimizer=adamw"), "autograd"),
        (("experiment=deep", "train.steps=300", "schedule.milestones=[200]", "model.hidden=16"), "fast"),
    ],
    ids=["adamw", "nesterov", "layers", "layers-autograd", "direct", "direct-autograd", "autograd", "deep"],
)
def test_each_option_from_the_command_line(tmp_path, words_file, options, engine):
    r = run_cli(*QUICK, f"data.path={words_file}", "hydra.run.dir=r", *options, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"engine: {engine} (train.engine=" in r.stdout + r.stderr
    m = metrics(tmp_path / "r")
    assert m["status"] == "ok" and m["dev_loss"] < 3.5  # from ~ln 27 = 3.3 (scaled init) or above 10 (lecture)
    assert checkpoint.load(tmp_path / "r")["engine"] == engine
    s = run_module("makemore.sample", "r", "-n", "3", cwd=tmp_path)
    assert s.returncode == 0 and "/3 new" in s.stdout, s.stderr


def test_resume_refuses_a_different_model(tmp_path, words_file):
    assert run_cli(*QUICK, f"data.path={words_file}", "hydra.run.dir=r", cwd=tmp_path).returncode == 0
    before = hashlib.sha256((tmp_path / "r" / "checkpoint.pt").read_bytes()).hexdigest()
    r = run_cli(*QUICK, f"data.path={words_file}", "hydra.run.dir=r", "resume=true", "model.hidden=32", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "model.hidden=16, this run has model.hidden=32" in r.stderr
    assert hashlib.sha256((tmp_path / "r" / "checkpoint.pt").read_bytes()).hexdigest() == before


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, words_file) -> Path:
    d = tmp_path_factory.mktemp("finished")
    assert run_cli(*QUICK, f"data.path={words_file}", "hydra.run.dir=r", cwd=d).returncode == 0
    return d / "r"


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda d: d / "missing.txt", "no such file"),
        (lambda d: (d / "bin.txt").write_bytes(b"\xff\xfe\x00\x81") and d / "bin.txt", "not UTF-8"),
        (lambda d: (d / "empty.txt").write_text("\n\n") and d / "empty.txt", "has no words"),
        (lambda d: (d / "few.txt").write_text("ab\ncd\n") and d / "few.txt", "too few"),
        (lambda d: d, "is not a file"),
    ],
)
def test_bad_data_path_one_line_nothing_overwritten(tmp_path, finished_run, make, needle):
    shutil.copytree(finished_run, tmp_path / "r")
    kept = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir() if p.is_file()}
    path = make(tmp_path)
    r = run_cli(*QUICK, f"data.path={path}", "hydra.run.dir=r", "resume=true", cwd=tmp_path)
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and str(path) in lines[0], r.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir() if p.is_file()} == kept


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_missing_device(tmp_path, device):
    import torch

    available = torch.cuda.is_available() if device == "cuda" else torch.backends.mps.is_available()
    if available:
        pytest.skip(f"this machine has {device}")
    r = run_cli(*QUICK, f"device={device}", "train.steps=0", cwd=tmp_path)
    assert r.returncode != 0 and f"device={device}" in r.stderr and "allowed: auto, cpu" in r.stderr
    assert "Traceback" not in r.stderr


def test_divergence_stops_with_step_and_lr(tmp_path, words_file):
    r = run_cli(*QUICK, f"data.path={words_file}", "schedule.lrs=[1e30]", "schedule.milestones=[]", cwd=tmp_path)
    assert r.returncode != 0
    assert "diverged" in r.stderr and "at step" in r.stderr and "lr 1e+30" in r.stderr
    assert "Traceback" not in r.stderr
    m = metrics(run_dirs(tmp_path)[0])
    assert m["status"] == "diverged" and m["dev_loss"] is None


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
        r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_model\.emb-4\+model\.hidden-37\+samples-2\+train\.steps-300", run.name
    ), run.name  # seed and data.path left out, as in sweep job names
    out = r.stdout + r.stderr
    assert out.count(f"run dir: {run}") == 2  # at the start and at the end
    # every run has a curve: 300 steps with the default eval_every give 20 dev points
    acc = events(run)
    assert len(acc.Scalars("loss/dev")) == 20 and "evaluation every 15 steps" in out
    # the Custom Scalars layout: dev and train loss on charts of their own (lines are coloured by run), then
    # minibatch loss and lr
    from tensorboard.plugins.custom_scalar import layout_pb2

    (tensor,) = acc.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(tensor.tensor_proto.string_val[0])
    assert [cat.title for cat in layout.category] == ["makemore", "train_health"]  # the diagnoses' charts
    charts = list(layout.category[0].chart)
    assert [list(c.multiline.tag) for c in charts[:2]] == [[r"^loss/dev$"], [r"^loss/train$"]]
    assert [c.title for c in charts] == ["dev loss", "train loss", "minibatch loss", "learning rate"]
    # steps/s: the console's last progress line and the summary give the same figure as metrics.json
    sps = metrics(run)["steps_per_second"]
    (bar,) = re.findall(r"step 300/300 .* (\d+) steps/s", out)
    (summary,) = re.findall(r"s of training steps, (\d+) steps/s\)", out)
    assert abs(int(bar) - sps) <= 1 and abs(int(summary) - sps) <= 1  # the same figure, printed with %.0f
