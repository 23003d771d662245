"""The count model of the previous lecture (makemore part 1): P[i, j] = (N[i, j] + 1) / sum_j (N[i, j] + 1)."""

from __future__ import annotations

import math

import torch

from .base import LanguageModel


class Bigram(LanguageModel):
    kind = "bigram"
    trainable = False  # counted by fit(), not trained by steps

    def __init__(self, vocab_size: int, block_size: int = 1, *, replicas: int = 1, seed: int = 0, device="cpu"):
        """One replica whatever `replicas` (counting draws nothing at random); block_size is 1."""
        super().__init__()
        self.vocab_size, self.block_size, self.replicas = vocab_size, 1, 1
        self.register_buffer("counts", torch.zeros(vocab_size, vocab_size, device=device))
        self.logP = torch.full((vocab_size, vocab_size), -math.log(vocab_size), device=device)

    def num_params(self) -> int:
        return self.counts.numel()

    def fit(self, X: torch.Tensor, Y: torch.Tensor) -> None:
        """Count every (previous char, next char) pair of the training contexts; add-one smoothing."""
        V = self.vocab_size
        idx = X[:, -1].to(self.device) * V + Y.to(self.device)
        self.counts.copy_(torch.bincount(idx, minlength=V * V).view(V, V).float())
        self._normalize()

    def _normalize(self) -> None:
        P = self.counts + 1
        self.logP = (P / P.sum(1, keepdim=True)).log()

    def forward(self, X: torch.Tensor, train: bool = False) -> torch.Tensor:
        return self.logP[X[..., -1]]  # log-probabilities are valid logits

    @torch.no_grad()
    def evaluate(self, X: torch.Tensor, Y: torch.Tensor, chunk: int = 0) -> torch.Tensor:
        lp = self.logP[X[:, -1].to(self.device), Y.to(self.device)]
        return (-lp.cpu().double().mean()).float().view(1)

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state, strict=strict, assign=assign)
        self._normalize()
        return result
