"""Atomic save and load of a run's state: parameters, vocabulary, config, step and batch RNG."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict

import torch

from .config import ConfigError

FILENAME = "checkpoint.pt"


def save(path: Path | str, state: Dict[str, Any]) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over the old one, so a
    kill at any moment leaves either the previous checkpoint or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would hide checkpoints from other users
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path | str) -> Dict[str, Any]:
    """Load a checkpoint (a file, or a run dir holding checkpoint.pt) onto the CPU."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise ConfigError(f"no checkpoint: {path} does not exist (a run dir holds {FILENAME} once training has started)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several kinds for a truncated or foreign file
        raise ConfigError(f"damaged checkpoint: {path} cannot be read ({type(e).__name__})") from None
    if not isinstance(state, dict) or "model" not in state or "vocab" not in state:
        raise ConfigError(f"damaged checkpoint: {path} is not a makemore checkpoint")
    return state
