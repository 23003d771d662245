"""makemore part 5's hierarchical model ("WaveNet", van den Oord et al. 2016, as the lecture simplifies it): the
context's characters are merged in pairs, level by level, each level Linear -> BatchNorm -> tanh:

    x = C[X]                          (N, 8, emb) for block_size 8
    x = tanh(norm(pairs(x) @ W_l))    (N, 4, hidden), (N, 2, hidden), (N, 1, hidden): log2(block_size) levels
    logits = x @ Wout + bout

It is the MLP (mlp.py) with another merge at each layer: two positions a level instead of the whole context at
once, so it shares the MLP's forward, init recipes and fast engine. As in the lecture, a layer before a batch
norm has no bias (the norm's shift takes its place).
"""

from __future__ import annotations

import torch

from .mlp import MLP


class WaveNet(MLP):
    kind = "wavenet"

    def __init__(
        self,
        vocab_size: int,
        block_size: int = 8,
        emb: int = 24,
        hidden: int = 128,
        *,
        norm: str = "batch",
        bn_eval: str = "calibrated",
        dropout: float = 0.0,
        replicas: int = 1,
        init: str = "scaled",
        seed: int = 2147483647,
        device: torch.device | str = "cpu",
    ):
        levels = block_size.bit_length() - 1
        if block_size < 2 or 2**levels != block_size:
            raise ValueError(f"block_size must be a power of 2 (>= 2) for WaveNet, got {block_size}")
        self.bias = norm != "batch"
        super().__init__(
            vocab_size, block_size, emb, hidden, layers=levels, norm=norm, bn_eval=bn_eval, dropout=dropout,
            replicas=replicas, init=init, seed=seed, device=device,
        )  # fmt: skip

    def layer_merges(self) -> list[int]:
        return [2] * self.layers
