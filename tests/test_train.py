"""The training loop (train.py): the lr schedules, the evaluation interval and its capped periodic evaluations,
the divergence checks, and what a run of the loop records."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import QUICK, events, metrics, run_cli, run_dirs

from makemore.schedule import cosine_schedule, step_schedule
from makemore.train import DIVERGE_WINDOW, Diverged, check_runaway, divergence_bound, eval_interval


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


def test_step_schedule_switches_on_the_milestone_step_itself():
    """Piecewise constant with bisect_right: the milestone step already uses the next lr."""
    f = step_schedule([0.1, 0.01, 0.001], [100, 200])
    assert [f(s) for s in (0, 99, 100, 101, 199, 200, 201, 10**6)] == [0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001, 0.001]
    assert step_schedule([0.5], [])(12345) == 0.5  # no milestones: one constant lr


def test_cosine_schedule_warm_up_peak_midpoint_and_floor():
    """Linear warm-up lr*(step+1)/warmup, lr at the end of warm-up, the half cosine's exact values, min_lr at
    `total` and after it (not a cosine that swings back up)."""
    lr, min_lr, warmup, total = 0.8, 0.1, 10, 110
    f = cosine_schedule(lr, min_lr, warmup, total)
    for s in range(warmup):
        assert f(s) == pytest.approx(lr * (s + 1) / warmup, rel=1e-12), s
    assert f(warmup) == pytest.approx(lr, rel=1e-12)
    assert f(warmup + 25) == pytest.approx(min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi / 4)), rel=1e-12)
    assert f(60) == pytest.approx((lr + min_lr) / 2, rel=1e-12)  # midway between warmup and total
    assert f(total - 1) > min_lr
    for s in (total, total + 1, total + 50, 10 * total):
        assert f(s) == pytest.approx(min_lr, rel=1e-12), s


def test_cosine_schedule_without_warm_up_starts_at_lr():
    """warmup=0: no ramp (no division by zero), lr at step 0, the midpoint at total/2, min_lr from total on."""
    f = cosine_schedule(1.0, 0.0, 0, 100)
    assert f(0) == 1.0
    assert f(50) == pytest.approx(0.5, abs=1e-12)
    assert f(100) == pytest.approx(0.0, abs=1e-12)
    assert f(150) == pytest.approx(0.0, abs=1e-12)
