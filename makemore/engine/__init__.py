"""Two engines behind one small interface, which train.fit drives knowing no engine internals:

    engine.batches(X, Y, ix)              per-step arguments for S steps from batch indices ix (S, K, N)
    engine.step(x, y, lr, picked)         one training step; log p(target) of each example into `picked`
    engine.state() / load_state(state)    the optimizer's state, for checkpoints (plain tensors and builtins)

fast (fast.py): the hand-derived step of step.py on the flat MLP, for the configs it supports (FAST_LIMITS);
autograd (autograd.py): Net (an nn.Module) with a torch.optim optimizer, for every option: the path to extend.
"""

from __future__ import annotations

from ..config import ConfigError

ENGINES = ("fast", "autograd")


def fast_unsupported(model_conf: dict) -> str | None:
    """The first option of `model_conf` the fast engine cannot train, as `key=value`, or None."""
    if model_conf.get("layers", 1) != 1:
        return f"model.layers={model_conf['layers']}"
    return None


def resolve(engine: str, model_conf: dict) -> str:
    """train.engine (auto | fast | autograd) -> the engine that trains this model."""
    reason = fast_unsupported(model_conf)
    if engine == "fast" and reason:
        raise ConfigError(f"train.engine=fast does not support {reason}: use train.engine=autograd (or auto)")
    if engine == "auto":
        return "autograd" if reason else "fast"
    if engine not in ENGINES:
        raise ConfigError(f"train.engine must be one of auto, fast, autograd, got {engine!r}")
    return engine


def form(engine: str) -> str:
    """The model form an engine trains (model.build's `form`)."""
    return "flat" if engine == "fast" else "module"


def make(model, batch_size: int, optimizer: dict | None = None, precision: str = "fp32"):
    """The engine for `model` (its form decides: MLP -> fast, Net -> autograd); optimizer: the group's dict;
    precision: fp32 | bf16 (train.precision: bf16 products, fp32 weights)."""
    from ..model import MLP

    optimizer = optimizer or {"name": "sgd", "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}
    if isinstance(model, MLP):
        from .fast import FastEngine

        return FastEngine(model, batch_size, optimizer, precision=precision)
    from .autograd import AutogradEngine

    return AutogradEngine(model, batch_size, optimizer, precision)
