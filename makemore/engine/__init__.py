"""Two engines behind one small interface, which train.fit drives knowing no engine internals:

    engine.batches(X, Y, ix)              per-step arguments for S steps from batch indices ix (S, K, N)
    engine.step(x, y, lr, picked)         one training step; log p(target) into `picked`, a tensor of shape
                                          engine.slot (K, ...): per example, or a mean; the loop averages it
    engine.state() / load_state(state)    the optimizer's state, for checkpoints (plain tensors and builtins)

fast (fast/): the hand-derived step on the MLP's parameters, for the models it supports (fast.unsupported);
autograd (autograd.py): any model's forward with a torch.optim optimizer: the path every family takes.

Which engine trains a run is decided once, by `resolve`, and recorded in the checkpoint's `engine` field.
"""

from __future__ import annotations

from ..config import ConfigError

ENGINES = ("fast", "autograd")


def resolve(requested: str, model) -> str:
    """train.engine (auto | fast | autograd) -> the engine that trains `model`: auto takes the fast engine
    wherever it supports the model; a model trained by counting (the bigram) gets "count" (no engine)."""
    from . import fast

    if requested not in ("auto", *ENGINES):
        raise ConfigError(f"train.engine must be one of auto, fast, autograd, got {requested!r}")
    if not model.trainable:
        return "count"
    reason = fast.unsupported(model)
    if requested == "fast" and reason:
        raise ConfigError(f"train.engine=fast does not support {reason}: use train.engine=autograd (or auto)")
    if requested == "auto":
        return "autograd" if reason else "fast"
    return requested


def make(name: str, model, batch_size: int, optimizer: dict, precision: str = "fp32", compile: bool = False):
    """The engine `name` (resolve's answer) for `model`; optimizer: the optimizer group as a dict;
    precision: fp32 | bf16 (train.precision: bf16 products, fp32 weights); compile: torch.compile the autograd
    engine's forward (train.compile; the fast engine has its own kernels and ignores it)."""
    if name == "fast":
        from .fast import FastEngine

        return FastEngine(model, batch_size, optimizer, precision=precision)
    from .autograd import AutogradEngine

    return AutogradEngine(model, batch_size, optimizer, precision, compile)
