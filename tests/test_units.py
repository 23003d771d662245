"""The fast unit tier: schedules, TensorBoard logging windows, the report's CSV, and the fast training and
evaluation paths against autograd and loss(). No subprocesses; real torch and TensorBoard; a few seconds."""

from __future__ import annotations

import csv
import io
import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_model import autograd_step

from makemore.data import Dataset, Vocab, build_dataset
from makemore.logs import Console, RunLog, TensorBoard
from makemore.model import MLP, build
from makemore.report import to_csv
from makemore.schedule import cosine_schedule, step_schedule
from makemore.step import FastStep
from makemore.train import Progress, fit


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: one thread runs them fastest, and a second one contending for a busy core can
    make a run of many small operations 10-50x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


WORDS = ["emma", "olivia", "ava", "isabella", "sophia", "charlotte", "mia", "amelia", "harper", "evelyn"]


# -- schedules --------------------------------------------------------------------------------------------


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


# -- TensorBoard minibatch windows ---------------------------------------------------------------------------


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
        log.on_segment(start, losses[start:start + S], lrs[start:start + S], progress)
        start += S
    tb.close()
    ea = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    ea.Reload()
    loss, log10, lr = (ea.Scalars(f"minibatch/{t}") for t in ("loss", "log10_loss", "lr"))
    ends = list(range(L, total + 1, L))
    assert [e.step for e in loss] == [e.step for e in log10] == [e.step for e in lr] == ends
    x = losses.double()
    for i, b in enumerate(ends):
        window = x[b - L:b]
        assert loss[i].value == pytest.approx(window.mean().item(), rel=1e-6), b
        assert log10[i].value == pytest.approx(window.log10().mean().item(), rel=1e-6), b
        assert lr[i].value == pytest.approx(lrs[b - 1], rel=1e-6), b


# -- the report's CSV --------------------------------------------------------------------------------------


def test_report_csv_keeps_zero_losses_and_blanks_none():
    """A loss of exactly 0.0 is a value, not a missing one: it stays "0.0"; None becomes an empty cell."""
    rows = [{"job": "a", "knobs": {"model.hidden": 8}, "params": 10, "train_loss": 0.0, "dev_loss": 0.0,
             "train_loss_std": None, "dev_loss_std": None, "seconds": 1.0, "status": "ok", "error": None},
            {"job": "b", "knobs": {}, "params": None, "train_loss": None, "dev_loss": None, "train_loss_std": None,
             "dev_loss_std": None, "seconds": None, "status": "failed", "error": "boom"}]
    a, b = csv.DictReader(io.StringIO(to_csv(rows, ["model.hidden"])))
    assert a == {"job": "a", "model.hidden": "8", "params": "10", "train_loss": "0.0", "train_loss_std": "",
                 "dev_loss": "0.0", "dev_loss_std": "", "seconds": "1.0", "status": "ok", "error": ""}
    assert b == {"job": "b", "model.hidden": "", "params": "", "train_loss": "", "train_loss_std": "",
                 "dev_loss": "", "dev_loss_std": "", "seconds": "", "status": "failed", "error": "boom"}


# -- training against autograd ------------------------------------------------------------------------------


@pytest.mark.parametrize("norm,K", [("layer", 2), ("none", 1), ("batch", 1), ("layer", 1)])
def test_fast_training_tracks_autograd_training_layer_norm_and_one_replica(norm, K):
    """300 minibatch steps with weight decay and a step schedule: the fast step's losses, parameters and
    running statistics follow autograd's (layer norm; the K = 1 path of plain 2-D products)."""
    steps, N, wd = 300, 32, 0.001
    vocab = Vocab.from_words(WORDS)
    Xtr, Ytr = build_dataset(WORDS * 3, vocab, 3)
    fast = build("mlp", len(vocab), block_size=3, emb=10, hidden=50, init="scaled", norm=norm, replicas=K)
    ref = MLP(len(vocab), 3, 10, 50, replicas=K, norm=norm)
    ref.load_state_dict(fast.state_dict())
    step = FastStep(fast, N, wd)
    ix = torch.randint(0, len(Ytr), (steps, K, N), generator=torch.Generator().manual_seed(1))
    rows, targets = step.batches(Xtr, Ytr, ix)
    lr = step_schedule([0.2, 0.05], [150])
    picked = torch.empty(steps, *targets[0].shape)
    ref_losses = []
    for i in range(steps):
        step(rows[i], targets[i], lr(i), picked[i])
        ref_losses.append(autograd_step(ref, Xtr[ix[i]], Ytr[ix[i]], lr(i), wd))
    ref_losses = torch.stack(ref_losses)
    torch.testing.assert_close(-picked.view(steps, K, N).mean(2), ref_losses, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(fast.flat, ref.flat, rtol=1e-3, atol=1e-4)
    for name in fast.buffers:
        torch.testing.assert_close(fast.buffers[name], ref.buffers[name], rtol=1e-3, atol=1e-5, msg=name)
    assert (ref_losses[-20:].mean(0) < ref_losses[:20].mean(0) - 0.5).all()  # it did learn


def tiny_dataset(block_size: int = 3) -> Dataset:
    vocab = Vocab.from_words(WORDS)
    words = {"train": WORDS[:7], "dev": WORDS[7:9], "test": WORDS[9:]}
    X, Y = {}, {}
    for s, w in words.items():
        X[s], Y[s] = build_dataset(w, vocab, block_size)
    return Dataset(vocab=vocab, words=words, X=X, Y=Y, source="test")


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_full_batch_fit_equals_autograd_full_batch_sgd(norm):
    """fit(batch_size=0) over several segments (eval and checkpoint boundaries) is plain full-batch SGD: every
    step sees every training example, with the schedule's lr of that step and weight decay."""
    steps, wd, K = 120, 0.01, 2
    data = tiny_dataset()
    V = len(data.vocab)
    model = build("mlp", V, block_size=3, emb=6, hidden=20, init="scaled", norm=norm, replicas=K, seed=3)
    ref = MLP(V, 3, 6, 20, replicas=K, norm=norm)
    ref.load_state_dict(model.state_dict())
    schedule = step_schedule([0.5, 0.1], [45])
    progress = fit(model, data, steps=steps, batch_size=0, schedule=schedule, eval_every=50, checkpoint_every=40,
                   seed=0, weight_decay=wd)
    Xtr, Ytr = data.X["train"], data.Y["train"]
    n = len(Ytr)
    X, Y = Xtr.expand(K, n, 3), Ytr.expand(K, n)
    ref_losses = torch.stack([autograd_step(ref, X, Y, schedule(s), wd) for s in range(steps)])
    assert len(progress.losses) > 1  # several segments
    torch.testing.assert_close(progress.minibatch_losses(), ref_losses, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.flat, ref.flat, rtol=1e-4, atol=1e-5)
    assert (ref_losses[-1] < ref_losses[0] - 0.5).all()  # it did learn


# -- evaluation against loss() ------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
@pytest.mark.parametrize("K", [1, 3])
def test_evaluate_equals_loss_in_eval_mode(norm, K):
    """evaluate(X, Y) (shared X, no-grad chunks with a partial last one; the 2-D path for norm none) is each
    replica's loss() in eval mode: batch norm uses the running statistics, which it leaves unchanged."""
    V, B, n = 11, 3, 2500  # chunks of at least 1024: 1024 + 1024 + 452
    g = torch.Generator().manual_seed(0)
    model = MLP(V, B, 4, 8, replicas=K, norm=norm).init_("lecture", [7 + k for k in range(K)])
    if norm != "none":
        model.params["gain"].copy_(0.5 + torch.rand(K, 8, generator=g))
        model.params["shift"].copy_(torch.randn(K, 8, generator=g))
    if norm == "batch":
        model.buffers["running_mean"].copy_(3 * torch.randn(K, 8, generator=g))
        model.buffers["running_var"].copy_(0.2 + 10 * torch.rand(K, 8, generator=g))
    buffers = {k: v.clone() for k, v in model.buffers.items()}
    X = torch.randint(0, V, (n, B), generator=g)
    Y = torch.randint(0, V, (n,), generator=g)
    expected = model.loss(X.expand(K, n, B), Y.expand(K, n), train=False)
    got = model.evaluate(X, Y, chunk=1024)
    assert got.shape == (K,)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for k, v in buffers.items():
        assert torch.equal(model.buffers[k], v), k
