"""karpathy/makemore's causal bag of words: each position averages the token and position embeddings of the prefix
up to itself, then one tanh MLP (residual) and the output layer.

    x = wte(idx) + wpe(pos);  x = x + mean_{s <= t} x_s;  x = x + tanh(x W1 + b1) W2 + b2;  logits = x Wout + bout
"""

from __future__ import annotations

import torch
from torch import nn

from .sequence import SequenceModel
from .taps import tap


class BoWNet(nn.Module):
    """One replica: token rows (N, T) -> logits (N, T, vocab)."""

    def __init__(self, vocab_size: int, block_size: int, emb: int, hidden: int):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, emb)
        self.wpe = nn.Embedding(block_size, emb)
        self.c_fc = nn.Linear(emb, hidden)
        self.c_proj = nn.Linear(hidden, emb)
        self.lm_head = nn.Linear(emb, vocab_size)
        T = block_size  # the causal average: row t weighs positions 0..t equally
        self.register_buffer("average", torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1).unsqueeze(1))

    def forward(self, idx: torch.Tensor, train: bool = False) -> torch.Tensor:
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        x = x + self.average[:T, :T] @ x
        pre = self.c_fc(x)
        h = torch.tanh(pre)
        tap("mlp", pre, h)  # for diagnostics.probe
        x = x + self.c_proj(h)
        return self.lm_head(x)


class BoW(SequenceModel):
    kind = "bow"

    def __init__(
        self,
        vocab_size: int,
        block_size: int = 16,
        emb: int = 64,
        hidden: int = 64,
        *,
        replicas: int = 1,
        seed: int = 2147483647,
        device: torch.device | str = "cpu",
    ):
        net = lambda: BoWNet(vocab_size, block_size, emb, hidden)  # noqa: E731
        super().__init__(vocab_size, block_size, net, replicas, seed, device)
        self.emb, self.hidden = emb, hidden
