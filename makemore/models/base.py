"""What the loop, evaluation, sampling, lr_find and checkpoints need of a model, and the shared defaults.

A model maps its inputs X (K, N, ...) to logits (K, N, ..., vocab) for K independent replicas (K = 1 for a plain
run). Its `inputs` say which (data.LAYOUTS): "context" models read the last block_size characters before each
target, X (K, N, block_size) -> logits (K, N, vocab); "sequence" models read rows of tokens from a word's start
and predict every position, X (K, N, T) -> logits (K, N, T, vocab), with target -1 where there is none. Either
way evaluation scores the same targets: every character and the end mark of every word of a split.
`LanguageModel` is the nn.Module base class giving every family the same evaluation, sampling probabilities and
parameter count from its `forward`."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

# examples per chunk of an evaluation: small enough that a chunk's hidden activations stay in the CPU's cache
# through the elementwise passes (bench/scale.py times the evaluation against its products)
CHUNK = 8192


def check_dropout(p: float) -> float:
    """A dropout probability, or ValueError: the families that take model.dropout share this check."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout must be in [0, 1), got {p}")
    return p


def chunks(X: torch.Tensor, Y: torch.Tensor, replicas: int, device, chunk: int = CHUNK) -> Iterator:
    """An evaluation's chunks of (X, Y) on the device, smaller with more replicas."""
    chunk = max(1024, chunk // replicas)
    for i in range(0, X.shape[0], chunk):
        yield X[i : i + chunk].to(device), Y[i : i + chunk].to(device)


IGNORE = -1  # the target of a sequence row's position that has none


def summed_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each replica's summed cross-entropy of logits (K, n, ..., V) against targets y (n, ...) shared by the
    replicas (IGNORE-d ones left out), summed in float64 on the CPU (MPS has no float64): one chunk of an
    evaluation. Each example's loss is summed in float64, so the total does not depend on the chunks."""
    K, V = logits.shape[0], logits.shape[-1]
    ce = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1).repeat(K), reduction="none", ignore_index=IGNORE)
    return ce.view(K, -1).cpu().double().sum(1)


def mean_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """The log of the mean over the replicas (dim 0) of softmax(logits): logits (K, ..., V) -> (..., V)."""
    K = logits.shape[0]
    return torch.logsumexp(torch.log_softmax(logits, -1), 0) - math.log(K)


def replica_losses(logits: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Per-replica mean cross-entropy of logits (K, N, ..., V) against Y (K, N, ...) over the targets that are not
    IGNORE-d: shape (K,)."""
    K, V = logits.shape[0], logits.shape[-1]
    ce = F.cross_entropy(logits.reshape(-1, V), Y.reshape(-1), reduction="none", ignore_index=IGNORE).view(K, -1)
    return ce.sum(1) / (Y.reshape(K, -1) != IGNORE).sum(1).clamp(min=1)


class LanguageModel(torch.nn.Module):
    """The base of every family. A family sets vocab_size, block_size and replicas and writes `forward`;
    `trainable = False` marks a model that is counted (`fit(X, Y)`) instead of trained by steps."""

    kind: str  # its model.kind
    inputs = "context"  # or "sequence" (the module docstring)
    trainable = True
    # the replicas are one model, an ensemble: it predicts the mean of their probabilities (models.build sets it)
    ensemble = False
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

    def eval_statistics(self, X: torch.Tensor | None) -> contextlib.AbstractContextManager:
        """The context an evaluation runs in, given the training contexts X it calibrates on: nothing to do here;
        the MLP's batch norm with bn_eval="calibrated" evaluates with statistics of its current weights over X."""
        return contextlib.nullcontext()

    def num_params(self) -> int:
        """Parameters of one replica."""
        return sum(p[0].numel() for p in self.parameters())

    def step_macs(self, batch: int) -> int:
        """About the multiply-adds of one training step of all replicas (the thread policy reads it)."""
        return 0

    def split_replicas(self, named: dict[str, torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        """Tensors keyed like named_parameters() (the parameters, or their gradients or updates) -> each parameter's
        name in one replica -> its tensor in each replica: here the slices of the leading dimension."""
        return {name: list(t.unbind(0)) for name, t in named.items()}

    def loss(self, X: torch.Tensor, Y: torch.Tensor, train: bool = False) -> torch.Tensor:
        """Per-replica mean cross-entropy, shape (K,)."""
        return replica_losses(self.forward(X, train=train), Y)

    def _chunk_logits(self, X: torch.Tensor, Y: torch.Tensor, chunk: int) -> Iterator:
        """(logits (K, n, ..., V), targets) of each chunk of an evaluation of (X, Y), shared by the replicas."""
        if self.inputs == "sequence":  # a row holds up to block_size targets
            chunk = max(1, chunk // X.shape[1])
        for x, y in chunks(X, Y, self.replicas, self.device, chunk):
            yield self.forward(x.unsqueeze(0).expand(self.replicas, *x.shape)), y

    @torch.no_grad()
    def evaluate(self, X: torch.Tensor, Y: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
        """Mean loss of each replica over every target of (X, Y) (shared by the replicas), in chunks summed in
        float64."""
        total = torch.zeros(self.replicas, dtype=torch.float64)
        for logits, y in self._chunk_logits(X, Y, chunk):
            total += summed_losses(logits, y)
        return (total / max(int((Y != IGNORE).sum()), 1)).float()

    @torch.no_grad()
    def evaluate_ensemble(
        self, X: torch.Tensor, Y: torch.Tensor, chunk: int = CHUNK
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(each replica's mean loss (K,), the ensemble's (1,)) over every target of (X, Y), from one forward pass
        per chunk: the ensemble's probability of a target is the mean of the replicas' (a log-mean-exp of their
        log-probabilities, which stays finite where one replica's probability underflows)."""
        total = torch.zeros(self.replicas, dtype=torch.float64)
        mixed = torch.zeros(1, dtype=torch.float64)
        for logits, y in self._chunk_logits(X, Y, chunk):
            total += summed_losses(logits.float(), y)
            mixed += summed_losses(mean_log_probs(logits.float()).unsqueeze(0), y)
        n = max(int((Y != IGNORE).sum()), 1)
        return (total / n).float(), (mixed / n).float()

    @torch.no_grad()
    def next_char_probs(self, prefix: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """prefix (K, N, t): the tokens so far from the start token (the boundary, 0) on -> probabilities (K, N,
        vocab) of the next character, for sampling. A context model reads the last block_size of them, the
        boundary repeated before the word as in its training contexts."""
        K, N, t = prefix.shape
        if t < self.block_size:
            prefix = torch.cat([prefix.new_zeros(K, N, self.block_size - t), prefix], -1)
        return torch.softmax(self.forward(prefix[..., -self.block_size :]) / temperature, dim=-1)

    def state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        """Plain CPU copies (a checkpoint must not alias a training buffer)."""
        return {k: v.detach().cpu().clone() for k, v in super().state_dict(*args, **kwargs).items()}
