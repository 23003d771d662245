"""The fast step's layer norm and tanh fused into one pass each way (fused_norm.c), built for this machine on
first use and called through ctypes.

Why hand-written: the step's elementwise work around the hidden layer is five or six torch calls each way
(conversions, native_layer_norm, sigmoid, 2s - 1; their backwards and the gain and shift updates), each a pass
over the batch x hidden activations; bf16 adds three conversions that fp32 does not have. torch.compile
(inductor), the maintained route to fused kernels, was slower than those eager calls on the CPU
(docs/performance.md) and needs a C compiler too. One C file with OpenMP does both passes.

The library is built with the system's C compiler (`cc`, or $CC) into ~/.cache/makemore (or
$XDG_CACHE_HOME/makemore), once per source, compiler and CPU (-march=native); threads come from the OpenMP
runtime torch loaded, so torch.set_num_threads governs them. library() returns None where it cannot be built
or loaded (no compiler, no OpenMP: e.g. Apple's clang) or where MAKEMORE_FUSED=0; the step then runs torch's
kernels, with the same results up to float rounding.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("fused_norm.c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC")

log = logging.getLogger(__name__)

_P, _I, _L, _F = ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_float
_SIGNATURES = {
    # x, x_bf16, gain_shift, eps, s, h, h_bf16, h_stride, mean, rstd, N, H
    "fused_norm_tanh_forward": [_P, _I, _P, _F, _P, _P, _I, _L, _P, _P, _L, _L],
    # dh, dh_bf16, s, x, x_bf16, mean, rstd, gain, alpha, gain_out, shift_out, dx, dx_bf16, N, H
    "fused_norm_tanh_backward": [_P, _I, _P, _P, _I, _P, _P, _P, _F, _P, _P, _P, _I, _L, _L],
}


def _cpu() -> str:
    """What -march=native depends on: a cache directory shared between machines (a cluster's home) must not
    hand one machine's build to another."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return platform.machine() + platform.processor()


def _build(cc: str) -> Path:
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), *FLAGS, cc, version, _cpu()]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "makemore"
    path = cache / f"fused_norm-{key}.so"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:  # built aside, then renamed: parallel jobs may race
            out = Path(tmp) / path.name
            subprocess.run([cc, *FLAGS, "-o", str(out), str(SOURCE), "-lm"], capture_output=True, text=True, check=True)
            os.replace(out, path)
    return path


@functools.cache
def library() -> ctypes.CDLL | None:
    """The built library, or None (see the module docstring); built and loaded once per process."""
    if os.environ.get("MAKEMORE_FUSED") == "0":
        return None
    cc = os.environ.get("CC") or "cc"
    try:
        path = _build(cc)
        lib = ctypes.CDLL(str(path))
    except subprocess.CalledProcessError as e:
        why = (e.stderr or "").strip().splitlines()
        log.warning("fused layer norm: %s failed (%s); the fast step uses torch's kernels", cc, why[0] if why else e)
        return None
    except OSError as e:  # no compiler, an unwritable cache, a library that does not load
        log.warning("fused layer norm: %s; the fast step uses torch's kernels", e)
        return None
    for name, args in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, None
    log.info("layer norm and tanh: fused (%s)", path)
    return lib
