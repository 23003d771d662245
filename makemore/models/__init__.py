"""The model families, one module each, and the one way to build a run's model from its `model` config.

What the loop, evaluation, sampling, lr_find and checkpoints use of a model is `LanguageModel` (base.py):
forward, loss, evaluate, next_char_probs, num_params, step_macs, state_dict / load_state_dict, and the
attributes vocab_size, block_size, replicas, trainable and device. A new family is one module here with a
LanguageModel subclass, an entry in FAMILIES, and a config dataclass in config.py (the README's "Developing
and extending" walks through it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import LanguageModel
from .bigram import Bigram
from .mlp import MLP


def _mlp(m: dict[str, Any], vocab_size: int, seed: int, replicas: int, device) -> MLP:
    return MLP(
        vocab_size,
        m["block_size"],
        m["emb"],
        m["hidden"],
        layers=m.get("layers", 1),
        norm=m["norm"],
        direct=m.get("direct", False),
        replicas=replicas,
        init=m["init"],
        seed=seed,
        device=device,
    )


def _bigram(m: dict[str, Any], vocab_size: int, seed: int, replicas: int, device) -> Bigram:
    return Bigram(vocab_size, device=device)


# model.kind -> builder(model config as a dict, vocabulary size, seed, replicas, device)
FAMILIES: dict[str, Callable[..., LanguageModel]] = {"mlp": _mlp, "bigram": _bigram}


def build(m: dict[str, Any], vocab_size: int, *, seed: int = 2147483647, replicas: int = 1, device="cpu"):
    """The model of a run from its `model` config (a dict): replica k is drawn from seed + k (replica 0 is the
    lecture's); a counted model (the bigram) has one replica."""
    return FAMILIES[m["kind"]](m, vocab_size, seed, replicas, device)


def from_checkpoint(state: dict, device="cpu"):
    """Rebuild the model and vocabulary saved by a run (checkpoint.load's dict; no Hydra config needed)."""
    from ..data import Vocab

    vocab = Vocab(state["vocab"][1:])
    conf = state["config"]
    model = build(conf["model"], len(vocab), seed=0, replicas=conf["train"]["replicas"], device=device)
    model.load_state_dict(state["model"])
    return model, vocab


__all__ = ["FAMILIES", "LanguageModel", "MLP", "Bigram", "build", "from_checkpoint"]
