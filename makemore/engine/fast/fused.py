"""The fast step's norm (layer or batch) and tanh fused into one C pass each way (fused_norm.c; batch norm's
statistics need one more), and its AdamW update in one pass over the flat buffer, built for this machine on first
use and called through ctypes.

Why hand-written: the step's elementwise work around the hidden layer is five or six torch calls each way
(conversions, native_layer_norm, sigmoid, 2s - 1; their backwards and the gain and shift updates), each a pass
over the batch x hidden activations; bf16 adds three conversions that fp32 does not have. torch.compile
(inductor), the maintained route to fused kernels, was slower than those eager calls on the CPU
(docs/performance.md) and needs a C compiler too. One C file with OpenMP does both passes.

The library is built by makemore/native.py (the system's C compiler, cached per source, compiler and CPU);
threads come from the OpenMP runtime torch loaded, so torch.set_num_threads governs them. library() returns None
where it cannot be built or loaded (no compiler, no OpenMP: e.g. Apple's clang) or where MAKEMORE_FUSED=0; the step
then runs torch's kernels, with the same results up to float rounding.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from pathlib import Path

from ... import native

SOURCE = Path(__file__).with_name("fused_norm.c")

log = logging.getLogger(__name__)

_P, _I, _L, _F = ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_float
_SIGNATURES = {
    # x, x_bf16, gain_shift, eps, s, h, h_bf16, h_stride, mean, rstd, N, H
    "fused_norm_tanh_forward": [_P, _I, _P, _F, _P, _P, _I, _L, _P, _P, _L, _L],
    # dh, dh_bf16, s, x, x_bf16, mean, rstd, gain, alpha, gain_out, shift_out, dx, dx_bf16, N, H
    "fused_norm_tanh_backward": [_P, _I, _P, _P, _I, _P, _P, _P, _F, _P, _P, _P, _I, _L, _L],
    # x, x_bf16, gain_shift, eps, momentum, running_mean, running_var, s, h, h_bf16, h_stride, mean, rstd, N, H
    "fused_batchnorm_tanh_forward": [_P, _I, _P, _F, _F, _P, _P, _P, _P, _I, _L, _P, _P, _L, _L],
    # the same arguments as fused_norm_tanh_backward (mean and rstd per column)
    "fused_batchnorm_tanh_backward": [_P, _I, _P, _P, _I, _P, _P, _P, _F, _P, _P, _P, _I, _L, _L],
    # p, g, m, v, wd (or NULL), n, lr, b1, b2, bc1, sqrt_bc2, eps
    "fused_adamw": [_P, _P, _P, _P, _P, _L, _F, _F, _F, _F, _F, _F],
}


@functools.cache
def library() -> ctypes.CDLL | None:
    """The built library (makemore/native.py), or None where it cannot be built or MAKEMORE_FUSED=0; built and
    loaded once per process."""
    if os.environ.get("MAKEMORE_FUSED") == "0":
        return None
    lib = native.library(SOURCE, _SIGNATURES, "fused norm", "the fast step uses torch's kernels")
    if lib is not None:
        log.info("norm and tanh: fused (%s)", lib._name)
    return lib
