"""The autograd engine: the model's forward, loss.backward() and a torch.optim optimizer built from the optimizer
group. Every family and every model option trains here; a new one needs only its module's forward.

precision="bf16": the forward runs under torch.autocast (bfloat16 products, fp32 parameters and their
gradients, as PyTorch's mixed precision does); the loss is taken from fp32 logits.

compile=True (train.compile): the forward goes through torch.compile (inductor), compiled on the first step. It
pays where the forward is many small operations and the run long enough to win back the compile (bench/speed.py
--families measures both; docs/performance.md); where it cannot compile (no C++ compiler, an unsupported
operation) one warning line says so and the run goes on eagerly."""

from __future__ import annotations

import copy
import logging

import torch

from ..device import PRECISIONS
from ..models.base import IGNORE
from . import optim

log = logging.getLogger("makemore")


class AutogradEngine:
    name = "autograd"

    def __init__(self, model, batch_size: int, optimizer: dict, precision: str = "fp32", compile: bool = False):
        self.model = model
        self.forward = torch.compile(model.forward) if compile else model.forward
        self.compiling = compile  # until the first step has compiled
        self.opt = optim.build(optimizer, model.parameters())
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.autocast = PRECISIONS[precision] == torch.bfloat16
        self.rows = model.inputs == "sequence"
        # a step's slot: log p of each example's target, or of a sequence batch its mean over the targets it has
        self.slot = (model.replicas, 1 if self.rows else batch_size)

    def batches(self, X: torch.Tensor, Y: torch.Tensor, ix: torch.Tensor):
        """Inputs (K, N, ...) and targets (K, N, ...) of each step."""
        return X[ix].unbind(0), Y[ix].unbind(0)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.model.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            if not self.compiling:
                return self.forward(x, train=True)
            try:  # the first call compiles
                logits = self.forward(x, train=True)
            except Exception as e:  # torch.compile raises many kinds (no compiler, an unsupported op, ...)
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                log.warning("train.compile=true: torch.compile failed (%s); training eagerly", first)
                self.forward = self.model.forward
                logits = self.forward(x, train=True)
            self.compiling = False
            return logits

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float, picked: torch.Tensor) -> None:
        logits = self._logits(x)
        logp = torch.log_softmax(logits.float(), -1)
        if self.rows:  # (K, N, T) targets, IGNORE where a row has none: each replica's mean over the others
            mask = y != IGNORE
            lp = logp.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
            mean = lp.sum((1, 2)) / mask.sum((1, 2)).clamp(min=1)
            picked.copy_(mean.detach().unsqueeze(1))
        else:
            lp = logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)  # (K, N)
            picked.copy_(lp.detach())
            mean = lp.mean(1)
        loss = -mean.sum()  # replicas are independent: each gets its own mean's gradient
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        optim.set_lr(self.opt, lr)
        self.opt.step()

    def state(self) -> dict:
        return copy.deepcopy(self.opt.state_dict())

    def load_state(self, state: dict) -> None:
        if state:
            self.opt.load_state_dict(state)
