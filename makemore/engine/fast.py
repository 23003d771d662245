"""The fast engine: step.py's hand-derived step on the flat MLP. Plain SGD stays fused into the gradient
products; any other optimizer gets the gradients in one flat buffer and optim.FlatUpdate applies them."""

from __future__ import annotations

import torch

from .. import optim
from ..model import MLP
from ..step import FastStep


class FastEngine:
    name = "fast"

    def __init__(self, model: MLP, batch_size: int, optimizer: dict, impl: str = "closed", precision: str = "fp32"):
        self.model = model
        if optim.is_plain_sgd(optimizer):
            self.update = None
            self.fast_step = FastStep(model, batch_size, optimizer["weight_decay"], precision=precision)
        else:
            grad = torch.zeros_like(model.flat)
            decay = torch.zeros_like(model.flat)
            for name in (n for n in MLP.DECAYED if n in model.params):  # views of the flat buffer at their offsets
                p = model.params[name]
                decay.as_strided(p.shape, p.stride(), p.storage_offset()).fill_(1.0)
            self.fast_step = FastStep(model, batch_size, grad=grad, precision=precision)
            self.update = optim.FlatUpdate(optimizer, model.flat, grad, decay, impl)

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
