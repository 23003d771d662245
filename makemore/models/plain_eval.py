"""The exact evaluation of one plain tanh layer (the lecture's MLP, model.norm=none, model.layers=1, no direct
connections) on the CPU: a run's last evaluation over every train and dev example, and each eval_every's dev.

The first layer's product emb @ W1 over a context of B characters is a sum of B table rows: with
T[p] = C @ W1[p E : (p + 1) E] (V x H per position), x_i @ W1 = sum_p T[p][x_i,p]. So plain_eval.c adds B rows
of 2T (and 2 b1) per example and takes s = sigmoid(2y) in the same pass: tanh(y) = 2s - 1, folded into the
output layer (h Wout + bout = s (2 Wout) + bout - the column sums of Wout). The output product stays torch's
(MKL), with its columns padded to a multiple of 32, where MKL is faster; then plain_eval.c takes each row's
cross-entropy over the first V columns and sums them in float64, in row order. The same sums as the model's
forward in a different order: the losses agree with it to float rounding (tests/test_plain_eval.py).

Why C: torch's path spends more than its products' time on the embedding gather, the sigmoid, the
log-softmax and the loss gather, each a pass over memory (docs/performance.md, "Data and evaluation at
scale"). Built by makemore/native.py; library() is None where it cannot be built (the caller then runs
torch's path) or where MAKEMORE_FUSED=0.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import torch

from .. import native

SOURCE = Path(__file__).with_name("plain_eval.c")
PAD = 32  # the output product's column multiple

_P, _L = ctypes.c_void_p, ctypes.c_long
_SIGNATURES = {
    "plain_hidden": [_P, _L, _L, _L, _P, _P, _L, _P],  # x, n, B, V, tables, bias, H, s
    "plain_nll_sum": [_P, _L, _L, _L, _P, _P],  # logits, n, V, stride, y, loss
}


@functools.cache
def library() -> ctypes.CDLL | None:
    if os.environ.get("MAKEMORE_FUSED") == "0":
        return None
    lib = native.library(SOURCE, _SIGNATURES, "plain evaluation", "the evaluation uses torch's kernels")
    if lib is not None:
        lib.plain_hidden.restype, lib.plain_nll_sum.restype = ctypes.c_long, ctypes.c_double
    return lib


class Folded:
    """One replica's weights for plain_eval.c: per-position tables 2T (B x V x H), bias 2 b1, and the output layer
    taking s, padded to a multiple of PAD columns."""

    def __init__(self, C: torch.Tensor, W1: torch.Tensor, b1: torch.Tensor, Wout: torch.Tensor, bout: torch.Tensor):
        V, E = C.shape
        H, out = W1.shape[1], Wout.shape[1]
        self.B, self.V, self.H, self.out = W1.shape[0] // E, V, H, out
        self.tables = torch.einsum("ve,peh->pvh", C, 2 * W1.view(self.B, E, H)).contiguous()
        self.bias = (2 * b1).contiguous()
        width = -(-out // PAD) * PAD
        self.Wo = torch.zeros(H, width)
        self.Wo[:, :out] = 2 * Wout
        self.bo = torch.zeros(width)
        self.bo[:out] = bout - Wout.sum(0)


def summed_loss(lib: ctypes.CDLL, f: Folded, x: torch.Tensor, y: torch.Tensor, bufs: dict) -> float:
    """The summed cross-entropy of one chunk (x: n x B and y: n, int64 on the CPU) in float64; bufs holds the
    chunk-sized buffers between calls."""
    n = x.shape[0]
    if bufs.get("n", 0) < n:
        bufs.update(n=n, s=torch.empty(n, f.H), logits=torch.empty(n, f.Wo.shape[1]), loss=torch.empty(n))
    x, y = x.contiguous(), y.contiguous()
    s, logits = bufs["s"][:n], bufs["logits"][:n]
    bad = lib.plain_hidden(x.data_ptr(), n, f.B, f.V, f.tables.data_ptr(), f.bias.data_ptr(), f.H, s.data_ptr())
    if bad:
        raise IndexError(f"evaluate: {bad} contexts hold a character index outside [0, {f.V})")
    torch.addmm(f.bo, s, f.Wo, out=logits)
    total = lib.plain_nll_sum(logits.data_ptr(), n, f.out, logits.shape[1], y.data_ptr(), bufs["loss"].data_ptr())
    if total < 0:
        raise IndexError(f"evaluate: a target lies outside [0, {f.out})")
    return total
