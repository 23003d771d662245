"""The optimizer group -> a torch.optim optimizer for the autograd engine (the fast engine's is fast/update.py).

Weight decay applies to the embedding table and the weight matrices (3-D: replica, in, out), never to biases
or norm parameters (2-D: replica, width). SGD's is coupled (g + wd * p, as torch.optim.SGD); AdamW's is
decoupled (p *= 1 - lr * wd before the Adam step, as torch.optim.AdamW). The lr comes from the schedule
each step (`set_lr`).

A new optimizer: a dataclass in config.py (registered in the `optimizer` group), a branch in `build`;
the fast engine picks it up later, if ever, in fast/update.py's `FlatUpdate` with an equivalence test.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def decayed(p: torch.Tensor) -> bool:
    """Matrices and the embedding table (K, in, out); not biases or norm gains and shifts (K, width)."""
    return p.dim() > 2


IMPLS = ("fused", "foreach", "for-loop")  # torch.optim's implementations, fastest first where all exist


def build(conf: dict, params: Iterable[torch.Tensor], impl: str = "auto") -> torch.optim.Optimizer:
    """torch.optim optimizer of `conf` (the optimizer group as a dict) over `params`, weight decay on the
    decayed ones only. The lr is a placeholder: set_lr sets each step's. impl "auto" takes torch's fused kernel
    where this torch has one for the parameters' device (one pass over every parameter; bench/speed.py --optimizers
    times the three), else its foreach kernels."""
    params = list(params)
    wd = conf["weight_decay"]
    groups = [
        {"params": [p for p in params if decayed(p)], "weight_decay": wd},
        {"params": [p for p in params if not decayed(p)], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if conf["name"] == "sgd":
        cls, kw = torch.optim.SGD, dict(lr=0.1, momentum=conf["momentum"], nesterov=conf["nesterov"])
    elif conf["name"] == "adamw":
        cls, kw = torch.optim.AdamW, dict(lr=1e-3, betas=tuple(conf["betas"]), eps=conf["eps"])
    else:
        raise ValueError(f"unknown optimizer {conf['name']!r}")
    for choice in IMPLS if impl == "auto" else (impl,):
        flags = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}[choice]
        try:
            return cls(groups, **kw, **flags)
        except (RuntimeError, TypeError, ValueError):  # no such kernel for this device or torch
            if impl != "auto":
                raise
    raise AssertionError("torch.optim's for-loop implementation takes any parameters")


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def is_plain_sgd(conf: dict) -> bool:
    """The lecture's SGD (no momentum): the fast step fuses it into its gradient products."""
    return conf["name"] == "sgd" and not conf["momentum"]
