"""karpathy/makemore's recurrent language models: a vanilla RNN cell or a GRU cell, unrolled over the word's prefix.

    h_0 = start (learned);  h_t = cell(emb(x_t), h_{t-1});  logits_t = h_t Wout + bout

The RNN cell is h_t = tanh([x_t | h_{t-1}] W + b); the GRU's reset gate r wipes channels of h_{t-1} before the
candidate hbar is computed, and its update gate z blends h_{t-1} and hbar (makemore's GRUCell, as written there).

Optional dropout (not in makemore): on the embeddings going in and the hidden states going out, never on the
recurrent connection h_{t-1} -> h_t, as Zaremba et al. 2014 regularize recurrent networks.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import check_dropout
from .sequence import SequenceModel
from .taps import tap


class RNNCell(nn.Module):
    def __init__(self, emb: int, hidden: int):
        super().__init__()
        self.xh_to_h = nn.Linear(emb + hidden, hidden)

    def forward(self, xt: torch.Tensor, hprev: torch.Tensor) -> torch.Tensor:
        pre = self.xh_to_h(torch.cat([xt, hprev], dim=1))
        h = torch.tanh(pre)
        tap("hidden", pre, h)  # for diagnostics.probe
        return h


class GRUCell(nn.Module):
    def __init__(self, emb: int, hidden: int):
        super().__init__()
        self.xh_to_z = nn.Linear(emb + hidden, hidden)
        self.xh_to_r = nn.Linear(emb + hidden, hidden)
        self.xh_to_hbar = nn.Linear(emb + hidden, hidden)

    def forward(self, xt: torch.Tensor, hprev: torch.Tensor) -> torch.Tensor:
        xh = torch.cat([xt, hprev], dim=1)
        r = torch.sigmoid(self.xh_to_r(xh))  # the reset gate: which channels of h_{t-1} the candidate sees
        pre = self.xh_to_hbar(torch.cat([xt, r * hprev], dim=1))
        hbar = torch.tanh(pre)
        tap("candidate", pre, hbar)  # for diagnostics.probe: the cell's tanh layer
        z = torch.sigmoid(self.xh_to_z(xh))  # the update gate: how much of each channel is replaced
        return (1 - z) * hprev + z * hbar


CELLS = {"rnn": RNNCell, "gru": GRUCell}


class RecurrentNet(nn.Module):
    """One replica: token rows (N, T) -> logits (N, T, vocab)."""

    def __init__(self, vocab_size: int, emb: int, hidden: int, cell: str, dropout: float = 0.0):
        super().__init__()
        self.dropout = dropout
        self.start = nn.Parameter(torch.zeros(1, hidden))  # the starting hidden state
        self.wte = nn.Embedding(vocab_size, emb)
        self.cell = CELLS[cell](emb, hidden)
        self.lm_head = nn.Linear(hidden, vocab_size)

    def forward(self, idx: torch.Tensor, train: bool = False) -> torch.Tensor:
        emb = F.dropout(self.wte(idx), self.dropout, train)  # (N, T, emb), all at once
        h = self.start.expand(idx.shape[0], -1)
        hiddens = []
        for t in range(idx.shape[1]):
            h = self.cell(emb[:, t], h)
            hiddens.append(h)
        return self.lm_head(F.dropout(torch.stack(hiddens, 1), self.dropout, train))


class RNN(SequenceModel):
    """model=rnn and model=gru (`cell`)."""

    def __init__(
        self,
        vocab_size: int,
        block_size: int = 16,
        emb: int = 64,
        hidden: int = 64,
        *,
        cell: str = "rnn",
        dropout: float = 0.0,
        replicas: int = 1,
        seed: int = 2147483647,
        device: torch.device | str = "cpu",
    ):
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        check_dropout(dropout)
        net = lambda: RecurrentNet(vocab_size, emb, hidden, cell, dropout)  # noqa: E731
        super().__init__(vocab_size, block_size, net, replicas, seed, device)
        self.kind, self.emb, self.hidden, self.dropout = cell, emb, hidden, dropout
