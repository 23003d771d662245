"""Which torch device and how many CPU threads a run uses."""

from __future__ import annotations

import os

import torch

from .config import ConfigError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}  # train.precision -> the products' operand type


def resolve(name: str) -> torch.device:
    """auto picks cuda, then mps, then cpu; asking for one that is not there is an error."""
    has_cuda = torch.cuda.is_available()
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if has_cuda else "mps" if has_mps else "cpu")
    if name == "cuda" and not has_cuda:
        raise ConfigError(
            "device=cuda but torch finds no CUDA GPU here; allowed: auto, cpu" + (", mps" if has_mps else "")
        )
    if name == "mps" and not has_mps:
        raise ConfigError(
            "device=mps but torch finds no Apple MPS device here; allowed: auto, cpu" + (", cuda" if has_cuda else "")
        )
    if name not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device must be one of auto, cpu, cuda, mps, got {name!r}")
    return torch.device(name)


def check_precision(precision: str, device: torch.device) -> None:
    """train.precision=bf16 needs bfloat16 products on the device: a CUDA GPU that has them (Ampere on), a CPU
    that oneDNN runs them on (AVX-512 and newer), or MPS on macOS 14 or later."""
    if precision == "fp32":
        return
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
    elif device.type == "cpu":
        ok = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    else:
        try:  # a small bf16 product must run and give its number
            x = torch.ones(2, 2, device=device, dtype=torch.bfloat16)
            ok = (x @ x).sum().item() == 8
        except (RuntimeError, TypeError):
            ok = False
    if not ok:
        raise ConfigError(f"train.precision=bf16 but this {device.type} has no bfloat16 products; allowed here: fp32")


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def threads(requested: int, parallel_jobs: int = 1) -> int:
    """0 = automatic: the cores shared fairly among jobs running at once, so they don't oversubscribe."""
    return requested if requested > 0 else max(1, cores() // max(1, parallel_jobs))


# Below this many multiply-adds per step a second OpenMP thread costs more than it brings: the lecture's step
# (about a million) is slower on 2 threads than on 1 (bench/speed.py --threads 2 shows it).
PARALLEL_STEP_MACS = 8_000_000


def training_threads(requested: int, available: int, macs_per_step: int) -> int:
    """Threads for the training loop: device.threads if set, else 1 for small steps (model.step_macs), else
    all `available` (threads(requested, parallel_jobs): this job's share of the cores)."""
    if requested > 0:
        return requested
    return available if macs_per_step >= PARALLEL_STEP_MACS else 1
