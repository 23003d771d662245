"""What the loop, evaluation, sampling, lr_find and checkpoints need of a model, and the shared defaults.

A model maps contexts X (K, N, block_size) of character indices to logits (K, N, vocab) for K independent
replicas (K = 1 for a plain run). `LanguageModel` is the nn.Module base class giving every family the same
evaluation, sampling probabilities and parameter count from its `forward`."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
import torch.nn.functional as F


def chunks(X: torch.Tensor, Y: torch.Tensor, replicas: int, device, chunk: int = 32768) -> Iterator:
    """An evaluation's chunks of (X, Y) on the device, smaller with more replicas."""
    chunk = max(1024, chunk // replicas)
    for i in range(0, X.shape[0], chunk):
        yield X[i : i + chunk].to(device), Y[i : i + chunk].to(device)


def summed_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each replica's summed cross-entropy of logits (K, n, V) against targets y (n,) shared by the replicas, in
    float64 on the CPU (MPS has no float64): one chunk of an evaluation."""
    K, n, V = logits.shape
    ce = F.cross_entropy(logits.reshape(-1, V), y.repeat(K), reduction="none")
    return ce.view(K, n).sum(1).cpu().double()


def replica_losses(logits: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Per-replica mean cross-entropy of logits (K, N, V) against Y (K, N): shape (K,)."""
    K, N, V = logits.shape
    return F.cross_entropy(logits.reshape(K * N, V), Y.reshape(K * N), reduction="none").view(K, N).mean(1)


class LanguageModel(torch.nn.Module):
    """The base of every family. A family sets vocab_size, block_size and replicas and writes `forward`;
    `trainable = False` marks a model that is counted (`fit(X, Y)`) instead of trained by steps."""

    kind: str  # its model.kind
    trainable = True
    vocab_size: int
    block_size: int
    replicas: int

    @property
    def device(self) -> torch.device:
        for t in itertools.chain(self.parameters(), self.buffers()):
            return t.device
        return torch.device("cpu")

    def forward(self, X: torch.Tensor, train: bool = False) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def num_params(self) -> int:
        """Parameters of one replica."""
        return sum(p[0].numel() for p in self.parameters())

    def step_macs(self, batch: int) -> int:
        """About the multiply-adds of one training step of all replicas (the thread policy reads it)."""
        return 0

    def loss(self, X: torch.Tensor, Y: torch.Tensor, train: bool = False) -> torch.Tensor:
        """Per-replica mean cross-entropy, shape (K,)."""
        return replica_losses(self.forward(X, train=train), Y)

    @torch.no_grad()
    def evaluate(self, X: torch.Tensor, Y: torch.Tensor, chunk: int = 32768) -> torch.Tensor:
        """Mean loss of each replica over all of (X, Y) (shared by the replicas), in chunks summed in float64."""
        total = torch.zeros(self.replicas, dtype=torch.float64)
        for x, y in chunks(X, Y, self.replicas, self.device, chunk):
            total += summed_losses(self.forward(x.unsqueeze(0).expand(self.replicas, len(x), -1)), y)
        return (total / max(X.shape[0], 1)).float()

    @torch.no_grad()
    def next_char_probs(self, context: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """context (K, N, block_size) -> probabilities (K, N, vocab) of the next character, for sampling."""
        return torch.softmax(self.forward(context) / temperature, dim=-1)

    def state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        """Plain CPU copies (a checkpoint must not alias a training buffer)."""
        return {k: v.detach().cpu().clone() for k, v in super().state_dict(*args, **kwargs).items()}
