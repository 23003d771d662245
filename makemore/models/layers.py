"""The pieces every family shares, written once: the init recipes, tanh, the norms, and the replica-aware
products. Parameters carry a leading replica dimension K (K = 1 for a plain run)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BN_EPS = 1e-5
BN_MOMENTUM = 0.001  # the lecture's running-statistics update rate
TANH_GAIN = 5 / 3  # makemore part 3: keeps tanh out of saturation at init
RECIPES = ("lecture", "scaled")


def draw_linear(fan_in: int, fan_out: int, recipe: str, g: torch.Generator, output: bool = False):
    """One layer's weight (fan_in, fan_out) and bias, drawn with torch.randn from `g` in that order (the
    lecture's draw order). lecture: the unscaled draws. scaled: a hidden layer gets the tanh gain over
    sqrt(fan_in) and a small bias; the output layer is made small and its bias zero, so the initial softmax is
    near uniform (loss ~ ln V)."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown init recipe {recipe!r}")
    W = torch.randn(fan_in, fan_out, generator=g)
    b = torch.randn(fan_out, generator=g)
    if recipe == "scaled":
        if output:
            W *= 0.01
            b *= 0
        else:
            W *= TANH_GAIN / math.sqrt(fan_in)
            b *= 0.01
    return W, b


def tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) = 2 sigmoid(2x) - 1: this torch build's CPU tanh is several times slower than its sigmoid
    (bench/precision.py times the chain), and evaluation runs it on millions of units."""
    s = torch.sigmoid(2 * x)
    return 2 * s - 1 if s.requires_grad else s.mul_(2).sub_(1)  # in place only where autograd is off


def linear(
    x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None = None, acc: torch.Tensor | None = None
) -> torch.Tensor:
    """x (K, N, in) @ W (K, in, out), plus a bias b (K, out) or added to acc (K, N, out) in the same product:
    plain 2-D products for one replica (faster than a batched product of batch 1, and the same numbers), batched
    ones for K."""
    if acc is None and b is not None:
        acc = b.unsqueeze(1)
    if W.shape[0] == 1:
        y = torch.mm(x[0], W[0]) if acc is None else torch.addmm(acc[0], x[0], W[0])
        return y.unsqueeze(0)
    return torch.bmm(x, W) if acc is None else torch.baddbmm(acc, x, W)


def normalize(
    x: torch.Tensor,
    kind: str,
    gain: torch.Tensor,
    shift: torch.Tensor,
    running: tuple[torch.Tensor, torch.Tensor] | None = None,
    train: bool = False,
) -> torch.Tensor:
    """Batch or layer norm of x (K, N, H) with each replica's gain and shift (K, H).

    Batch norm normalizes over the N rows: with train=True by the batch's statistics, which also move the
    running ones (`running`: mean and variance, (K, H), updated in place at BN_MOMENTUM, the variance unbiased as
    torch's BatchNorm keeps it); with train=False by the running ones. Layer norm normalizes each row."""
    if kind == "layer":
        return F.layer_norm(x, (x.shape[-1],), eps=BN_EPS) * gain.unsqueeze(1) + shift.unsqueeze(1)
    if kind != "batch":
        raise ValueError(f"unknown norm {kind!r}")
    # torch's batch norm over the rows, each replica's units as channels of their own: (K, N, H) -> (N, K * H)
    K, N, H = x.shape
    rm, rv = running
    y = F.batch_norm(
        x.transpose(0, 1).reshape(N, K * H),
        rm.view(K * H),
        rv.view(K * H),
        gain.reshape(K * H),
        shift.reshape(K * H),
        training=train,
        momentum=BN_MOMENTUM,
        eps=BN_EPS,
    )
    return y.view(N, K, H).transpose(0, 1)


def embed(C: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Each replica's rows of its table: C (K, V, E), X (K, N, ...) -> (K, N, ..., E), in one lookup."""
    K, V, E = C.shape
    offset = (torch.arange(K, device=X.device) * V).view(K, *([1] * (X.dim() - 1)))
    return C.reshape(K * V, E)[X + offset]
