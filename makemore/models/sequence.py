"""What the sequence families (rnn, gru, bow, transformer) share: each reads a word's prefix, from its start token,
and predicts the next character at every position at once, as karpathy/makemore trains them.

Their examples are rows of block_size tokens (data.py's sequence layout): a word's start token and characters, the
targets shifted by one, -1 where there is none. Each family writes one replica as a plain nn.Module (`net`: token
rows (N, T) -> logits (N, T, vocab)) that reads like makemore's code; K replicas are K such modules, each built from
its own seed, run one after another (a batched form would need every family written for a replica dimension).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import taps
from .base import LanguageModel


class SequenceModel(LanguageModel):
    inputs = "sequence"

    def __init__(
        self, vocab_size: int, block_size: int, net: Callable[[], torch.nn.Module], replicas: int, seed: int, device
    ):
        super().__init__()
        self.vocab_size, self.block_size, self.replicas = vocab_size, block_size, replicas
        nets = []
        for k in range(replicas):
            with torch.random.fork_rng(devices=[]):  # torch's default inits draw from the global generator
                torch.manual_seed(seed + k)
                nets.append(net())
        self.nets = torch.nn.ModuleList(nets).to(device)

    @property
    def C(self) -> torch.Tensor:
        """The character embedding tables (K, V, E) (the embedding map draws replica 0's)."""
        return torch.stack([net.wte.weight for net in self.nets])

    def forward(self, X: torch.Tensor, train: bool = False) -> torch.Tensor:
        """X: (K, N, T) token rows -> logits (K, N, T, vocab); train=True turns dropout on."""
        logits = []
        for k, (net, x) in enumerate(zip(self.nets, X)):
            taps.replica(k)  # a diagnostics probe's record knows whose layers follow
            logits.append(net(x, train))
        return torch.stack(logits)

    @torch.no_grad()
    def next_char_probs(self, prefix: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """prefix: (K, N, t) tokens from the start token on -> the next character's probabilities (K, N, vocab),
        read from the last block_size tokens."""
        logits = self.forward(prefix[..., -self.block_size :])[..., -1, :]
        return torch.softmax(logits / temperature, dim=-1)

    def split_replicas(self, named: dict[str, torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        """As LanguageModel.split_replicas: `nets.k.<name>` is replica k's <name> (listed in the order of k)."""
        out: dict[str, list[torch.Tensor]] = {}
        for name, t in named.items():
            out.setdefault(name.split(".", 2)[2], []).append(t)
        return out

    def num_params(self) -> int:
        """Parameters of one replica."""
        return sum(p.numel() for p in self.nets[0].parameters())

    def step_macs(self, batch: int) -> int:
        """About 3 multiply-adds per parameter and token (forward, two backward), per replica."""
        per_token = sum(p.numel() for p in self.nets[0].parameters())
        return 3 * self.replicas * batch * self.block_size * per_token
