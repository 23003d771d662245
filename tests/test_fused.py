"""fused_norm.c through fused.py: the fast step's layer norm and tanh in one C pass each way. The step with it
equals the step with torch's kernels (fp32 to float rounding, bf16 to bfloat16's), as an update and into a
gradient buffer, on one thread and two; where it cannot be built the step runs torch's kernels and says why."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from makemore.engine.fast import fused
from makemore.engine.fast.layout import FlatLayout
from makemore.engine.fast.step import FastStep
from makemore.models import MLP, WaveNet

pytestmark = pytest.mark.skipif(
    shutil.which(os.environ.get("CC") or "cc") is None, reason="no C compiler: the step runs torch's kernels"
)
PRECISIONS = ["fp32", "bf16"]  # bf16 products run on any CPU (slowly without the instructions): tested everywhere


def test_the_kernel_builds_with_the_system_compiler():
    assert fused.library() is not None


def train(precision, on, *, H=37, steps=20, wd=3e-4, grad=False, direct=False, threads=1, norm="layer", stack="mlp"):
    """`steps` steps of a normed MLP (one replica; stack "deep": 3 layers, "wavenet": WaveNet) from one init and
    one batch sequence; with grad, the gradients go into a buffer and plain SGD applies them. Returns the step, the
    losses (steps, N) and the weights, and the last gradients where grad."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        V, B, E, N = 27, 4, 8, 32
        if stack == "wavenet":
            model = WaveNet(V, B, E, H, norm=norm, seed=0)
        else:
            model = MLP(V, B, E, H, layers=3 if stack == "deep" else 1, norm=norm, direct=direct, init="scaled", seed=0)
        layout = FlatLayout(model)
        g = torch.zeros_like(layout.flat) if grad else None
        step = FastStep(layout, N, 0.0 if grad else wd, grad=g, precision=precision, fused=on)
        X = torch.randint(0, V, (400, B))
        Y = (X[:, -1] + 1) % V  # learnable: the next character follows the last one
        ix = torch.randint(0, 400, (steps, 1, N), generator=torch.Generator().manual_seed(1))
        rows, targets = step.batches(X, Y, ix)
        picked = torch.empty(steps, *targets[0].shape)
        for i in range(steps):
            step(rows[i], targets[i], 0.2, picked[i])
            if grad:
                layout.flat.sub_(0.2 * g)
        return step, -picked.view(steps, N), layout.flat.clone(), g
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("norm", ["layer", "batch"])
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("direct", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_fused_step_equals_torchs_kernels(precision, grad, direct, threads, norm):
    fast, losses, flat, g = train(precision, True, grad=grad, direct=direct, threads=threads, norm=norm)
    ref, ref_losses, ref_flat, ref_g = train(precision, False, grad=grad, direct=direct, threads=threads, norm=norm)
    assert fast.fused and not ref.fused
    # fp32: the same math in another order; bf16: operands the two round differently now and then
    tol = dict(rtol=1e-5, atol=1e-5) if precision == "fp32" else dict(rtol=2e-2, atol=2e-3)
    torch.testing.assert_close(losses, ref_losses, **tol)
    torch.testing.assert_close(flat, ref_flat, **tol)
    if grad:
        torch.testing.assert_close(g, ref_g, **tol)
    assert losses[-5:].mean() < losses[:5].mean() - 0.3  # it learned


@pytest.mark.parametrize("stack", ["deep", "wavenet"])
@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_every_layer_of_a_deeper_stack_is_fused_and_equals_torchs_kernels(stack, norm):
    fast, losses, flat, _ = train("fp32", True, stack=stack, norm=norm, grad=True)
    ref, ref_losses, ref_flat, _ = train("fp32", False, stack=stack, norm=norm, grad=True)
    assert all(layer.fused for layer in fast.layers) and not any(layer.fused for layer in ref.layers)
    torch.testing.assert_close(losses, ref_losses, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(flat, ref_flat, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", ["layer", "batch"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_fused_step_is_deterministic_on_two_threads(precision, norm):
    """Its column sums are added in thread order: a run repeats bit for bit (resumed runs rely on it)."""
    _, losses, flat, _ = train(precision, True, H=300, threads=2, norm=norm)
    _, losses2, flat2, _ = train(precision, True, H=300, threads=2, norm=norm)
    assert torch.equal(losses, losses2) and torch.equal(flat, flat2)


def test_only_one_replica_on_the_cpu_with_a_norm_is_fused():
    for norm, K in (("none", 1), ("batch", 2), ("layer", 2)):
        assert not FastStep(FlatLayout(MLP(27, 3, 8, 16, replicas=K, norm=norm)), 8).fused, (norm, K)
    assert FastStep(FlatLayout(MLP(27, 3, 8, 16, norm="layer")), 8).fused
    assert FastStep(FlatLayout(MLP(27, 3, 8, 16, norm="batch")), 8).fused


PROBE = (
    "from makemore.models import MLP; from makemore.engine.fast.layout import FlatLayout; "
    "from makemore.engine.fast.step import FastStep; "
    "print(FastStep(FlatLayout(MLP(27, 3, 8, 16, norm='layer')), 8).fused)"
)


def probe(tmp_path, **env):
    e = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), **env)
    return subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=e, cwd=ROOT, timeout=120)


@pytest.mark.slow  # a fresh process each (these four)
def test_it_is_built_once_into_the_cache(tmp_path):
    first, second = probe(tmp_path), probe(tmp_path)
    assert first.stdout.strip() == second.stdout.strip() == "True", first.stderr
    built = list((tmp_path / "cache" / "makemore").iterdir())
    assert len(built) == 1 and built[0].name.startswith("fused_norm-") and built[0].suffix == ".so"  # no leftovers


@pytest.mark.slow
def test_without_a_compiler_the_step_runs_torchs_kernels_and_says_why(tmp_path):
    r = probe(tmp_path, CC=str(tmp_path / "no-such-cc"))
    assert r.returncode == 0 and r.stdout.strip() == "False"
    assert "fused norm:" in r.stderr and "no-such-cc" in r.stderr and "uses torch's kernels" in r.stderr
    assert r.stderr.count("\n") == 1  # one line, no traceback


@pytest.mark.slow
def test_a_failing_build_says_why_in_one_line(tmp_path):
    cc = tmp_path / "cc"
    script = "#!/bin/sh\n[ \"$1\" = --version ] && echo fake 1.0 && exit 0\necho 'fatal: no OpenMP here' >&2\nexit 1\n"
    cc.write_text(script)
    cc.chmod(0o755)
    r = probe(tmp_path, CC=str(cc))
    assert r.returncode == 0 and r.stdout.strip() == "False"
    assert "fatal: no OpenMP here" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.slow
def test_makemore_fused_0_turns_it_off(tmp_path):
    r = probe(tmp_path, MAKEMORE_FUSED="0")
    assert r.returncode == 0 and r.stdout.strip() == "False" and r.stderr == ""
    assert not (tmp_path / "cache").exists()  # nothing built


@pytest.mark.parametrize("H", [3, 16, 37, 1000])
def test_the_kernels_against_torch_autograd(H):
    """The two C functions alone, fp32: s = sigmoid(2y), h = 2s - 1 (into a strided buffer), mean and rstd, and the
    backward's dx and gain and shift gradients, against torch's layer norm and tanh through autograd; y reaches
    +-40, where the sigmoid saturates."""
    lib, N, eps, alpha = fused.library(), 9, 1e-5, -0.25
    torch.manual_seed(H)
    x = torch.randn(N, H) * 3 + 1
    gain_shift = torch.cat([torch.randn(H) * 10, torch.randn(H)])
    s, h_a = torch.empty(N, H), torch.full((N, H + 3), 7.0)
    mean, rstd = torch.empty(N), torch.empty(N)
    lib.fused_norm_tanh_forward(
        x.data_ptr(), 0, gain_shift.data_ptr(), eps, s.data_ptr(), h_a.data_ptr(), 0, H + 3,
        mean.data_ptr(), rstd.data_ptr(), N, H,
    )  # fmt: skip
    xr, gain, shift = x.clone().requires_grad_(), *gain_shift.clone().view(2, H).unbind(0)
    gain.requires_grad_(), shift.requires_grad_()
    y = torch.nn.functional.layer_norm(xr, [H], gain, shift, eps)
    h = torch.tanh(y)
    torch.testing.assert_close(s, torch.sigmoid(2 * y).detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h_a[:, :H], h.detach(), rtol=1e-5, atol=2e-6)
    assert (h_a[:, H:] == 7.0).all()  # the columns past H (the ones column) untouched
    torch.testing.assert_close(mean, x.mean(1))
    torch.testing.assert_close(rstd, torch.rsqrt(x.var(1, unbiased=False) + eps))
    _check_backward(lib.fused_norm_tanh_backward, x, s, mean, rstd, gain_shift, alpha, h, (xr, gain, shift))


def _check_backward(backward, x, s, mean, rstd, gain_shift, alpha, h, leaves):
    """A backward kernel (fp32) against autograd through h: dx, and the gain and shift moved by alpha times their
    gradients. The kernel's gradients are those of dL/dy / 4 (tanh'(y) = 4 s (1 - s); step.py keeps the 4 in its
    alphas)."""
    xr, gain, shift = leaves
    N, H = s.shape
    dh = torch.randn(N, H)
    (h * dh).sum().backward()
    dx, gain_out, shift_out = torch.empty(N, H), torch.ones(H), torch.zeros(H)
    backward(
        dh.data_ptr(), 0, s.data_ptr(), x.data_ptr(), 0, mean.data_ptr(), rstd.data_ptr(), gain_shift.data_ptr(),
        alpha, gain_out.data_ptr(), shift_out.data_ptr(), dx.data_ptr(), 0, N, H,
    )  # fmt: skip
    torch.testing.assert_close(4 * dx, xr.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(4 * (gain_out - 1) / alpha, gain.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(4 * shift_out / alpha, shift.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("H", [3, 16, 300])
def test_the_batch_norm_kernels_against_torch_autograd(H):
    """The batch-norm C functions alone, fp32: each column's statistics over the rows, s and h = 2s - 1, the
    running statistics moved, and the backward's dx and gain and shift gradients, against torch's batch norm and
    tanh through autograd."""
    lib, N, eps, alpha, momentum = fused.library(), 37, 1e-5, -0.25, 0.1
    torch.manual_seed(H)
    x = torch.randn(N, H) * 3 + 1
    gain_shift = torch.cat([torch.randn(H) * 3, torch.randn(H)])
    s, h_a = torch.empty(N, H), torch.full((N, H + 1), 7.0)
    mean, rstd, rm, rv = torch.empty(H), torch.empty(H), torch.zeros(H), torch.ones(H)
    lib.fused_batchnorm_tanh_forward(
        x.data_ptr(), 0, gain_shift.data_ptr(), eps, momentum, rm.data_ptr(), rv.data_ptr(), s.data_ptr(),
        h_a.data_ptr(), 0, H + 1, mean.data_ptr(), rstd.data_ptr(), N, H,
    )  # fmt: skip
    xr, gain, shift = x.clone().requires_grad_(), *gain_shift.clone().view(2, H).unbind(0)
    gain.requires_grad_(), shift.requires_grad_()
    rm_ref, rv_ref = torch.zeros(H), torch.ones(H)
    y = torch.nn.functional.batch_norm(xr, rm_ref, rv_ref, gain, shift, True, momentum, eps)
    h = torch.tanh(y)
    torch.testing.assert_close(s, torch.sigmoid(2 * y).detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h_a[:, :H], h.detach(), rtol=1e-5, atol=2e-6)
    assert (h_a[:, H:] == 7.0).all()
    torch.testing.assert_close(mean, x.mean(0))
    torch.testing.assert_close(rstd, torch.rsqrt(x.var(0, unbiased=False) + eps))
    torch.testing.assert_close(rm, rm_ref)
    torch.testing.assert_close(rv, rv_ref)  # moved by the unbiased variance, as torch's
    _check_backward(lib.fused_batchnorm_tanh_backward, x, s, mean, rstd, gain_shift, alpha, h, (xr, gain, shift))
