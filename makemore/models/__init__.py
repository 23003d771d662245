"""The model families, one module each, and the one way to build a run's model from its `model` config.

What the loop, evaluation, sampling, lr_find and checkpoints use of a model is `LanguageModel` (base.py):
forward, loss, evaluate, next_char_probs, num_params, step_macs, state_dict / load_state_dict, and the
attributes kind, inputs, vocab_size, block_size, replicas, trainable and device. A new family is one module here
with a LanguageModel subclass, an entry in FAMILIES, and a config dataclass in config.py (the README's
"Developing and extending" walks through it).
"""

from __future__ import annotations

import inspect
from typing import Any

from .base import LanguageModel
from .bigram import Bigram
from .bow import BoW
from .mlp import MLP
from .rnn import RNN
from .transformer import Transformer
from .wavenet import WaveNet

# model.kind -> its class; the constructor's keyword arguments are the config's keys (config.MODEL_CONFIGS)
FAMILIES: dict[str, type[LanguageModel]] = {
    "bigram": Bigram,
    "mlp": MLP,
    "wavenet": WaveNet,
    "rnn": RNN,
    "gru": RNN,
    "bow": BoW,
    "transformer": Transformer,
}


def inputs(kind: str) -> str:
    """The examples a family reads (data.LAYOUTS): "context" (the last block_size characters) or "sequence"."""
    return FAMILIES[kind].inputs


def build(
    m: dict[str, Any],
    vocab_size: int,
    *,
    seed: int = 2147483647,
    replicas: int = 1,
    ensemble: bool = False,
    device="cpu",
):
    """The model of a run from its `model` config (a dict): replica k is drawn from seed + k (replica 0 of the MLP
    is the lecture's); a counted model (the bigram) has one replica. With `ensemble` the replicas are one model
    (LanguageModel.ensemble)."""
    cls = FAMILIES[m["kind"]]
    accepted = inspect.signature(cls).parameters
    kwargs = {k: v for k, v in m.items() if k in accepted}  # an old checkpoint's config may hold more keys
    if "cell" in accepted:
        kwargs["cell"] = m["kind"]
    model = cls(vocab_size, **kwargs, replicas=replicas, seed=seed, device=device)
    model.ensemble = ensemble
    return model


def from_checkpoint(state: dict, device="cpu"):
    """Rebuild the model and vocabulary saved by a run (checkpoint.load's dict; no Hydra config needed)."""
    from ..data import Vocab

    vocab = Vocab(state["vocab"][1:])
    conf = state["config"]
    t = conf["train"]
    model = build(
        conf["model"], len(vocab), seed=0, replicas=t["replicas"], ensemble=t.get("ensemble", False), device=device
    )
    model.load_state_dict(state["model"])
    return model, vocab


__all__ = ["FAMILIES", "LanguageModel", "MLP", "WaveNet", "RNN", "BoW", "Transformer", "Bigram", "build"]
