"""The fast engine: the hand-derived step (step.py) on the parameters of the MLP or WaveNet module, laid out in one
flat buffer (layout.py). Plain SGD stays fused into the gradient products; any other optimizer gets the gradients
in a flat gradient buffer and update.py's FlatUpdate applies them. It is an optimization of models/mlp.py, tested
equal to the autograd engine (tests/test_engines.py)."""

from __future__ import annotations

import torch

from ...models.mlp import MLP
from ..optim import is_plain_sgd
from .layout import FlatLayout
from .step import FastStep
from .update import FlatUpdate


def unsupported(model) -> str | None:
    """Why this engine cannot train `model` (the family it lacks, as `model=kind`), or None: it trains the stacks of
    tanh layers, the MLP (any number of layers, any norm, direct connections) and WaveNet, without dropout."""
    if not isinstance(model, MLP):
        return f"model={model.kind}"
    if model.dropout:
        return f"model.dropout={model.dropout} (its step has no dropout masks)"
    return None


class FastEngine:
    name = "fast"

    def __init__(self, model: MLP, batch_size: int, optimizer: dict, impl: str = "closed", precision: str = "fp32"):
        self.model = model
        self.layout = FlatLayout(model)
        if is_plain_sgd(optimizer):
            self.update = None
            self.fast_step = FastStep(self.layout, batch_size, optimizer["weight_decay"], precision=precision)
        else:
            grad = torch.zeros_like(self.layout.flat)
            self.fast_step = FastStep(self.layout, batch_size, grad=grad, precision=precision)
            self.update = FlatUpdate(optimizer, self.layout.flat, grad, self.layout.decay_mask(), impl)

    @property
    def slot(self) -> tuple[int, ...]:
        """A step's slot: log p of each example's target."""
        K, N = self.model.replicas, self.fast_step.N
        return (N, 1) if K == 1 else (K, N, 1)

    def batches(self, X: torch.Tensor, Y: torch.Tensor, ix: torch.Tensor):
        return self.fast_step.batches(X, Y, ix)

    def step(self, rows: torch.Tensor, targets: torch.Tensor, lr: float, picked: torch.Tensor) -> None:
        self.fast_step(rows, targets, lr, picked)
        if self.update is not None:
            self.update(lr)

    def state(self) -> dict:
        return self.update.state() if self.update is not None else {}

    def load_state(self, state: dict) -> None:
        if self.update is not None and state:
            self.update.load_state(state)
