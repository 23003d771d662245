"""What a forward shows of its hidden layers while diagnostics.probe runs it: each family calls `tap` with a layer's
pre-activation and activation where it computes them (one line in its forward), and `recording` collects them.
Outside a recording `tap` does nothing, so training and evaluation are untouched.

The recorded tensors are the forward's own, nodes of its autograd graph, so the probe can take the loss's gradient
at each activation. A layer may come in pieces (an RNN's time steps); the MLP's tensors carry the replica dimension
first, a sequence family's nets run one replica after another (`replica` says whose pieces follow).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch


@dataclass
class Layer:
    tanh: bool  # a tanh layer: its saturated and dead units are counted
    pieces: list[tuple[int | None, torch.Tensor | None, torch.Tensor]] = field(default_factory=list)
    # (replica or None for tensors (K, ..., units), pre-activation or None, activation)


class Record:
    def __init__(self):
        self.layers: dict[str, Layer] = {}
        self.replica: int | None = None


_record: Record | None = None  # the recording in progress, if any


@contextmanager
def recording() -> Iterator[Record]:
    """Collect every `tap` of the forwards run inside (diagnostics.probe's, one at a time)."""
    global _record
    previous, _record = _record, Record()
    try:
        yield _record
    finally:
        _record = previous


def tap(name: str, pre: torch.Tensor | None, act: torch.Tensor, tanh: bool = True) -> None:
    """A hidden layer's pre-activation (the nonlinearity's input; None where there is no single one) and activation,
    units last; recorded only inside `recording`."""
    if _record is not None:
        _record.layers.setdefault(name, Layer(tanh)).pieces.append((_record.replica, pre, act))


def replica(k: int) -> None:
    """The taps that follow are replica k's (a sequence family runs its replicas' nets one after another)."""
    if _record is not None:
        _record.replica = k
