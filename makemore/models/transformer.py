"""karpathy/makemore's Transformer (Vaswani et al. 2017, as GPT-2 arranges it): token and position embeddings, n_layer
blocks of causal self-attention and a GELU MLP, each behind a layer norm with a residual around it, a final layer
norm and the output layer. Optional dropout (nanoGPT's places: embeddings, attention weights, residual branches).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import check_dropout
from .sequence import SequenceModel
from .taps import tap


class CausalSelfAttention(nn.Module):
    def __init__(self, emb: int, n_head: int, dropout: float):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.c_attn = nn.Linear(emb, 3 * emb)  # queries, keys and values of every head, in one product
        self.c_proj = nn.Linear(emb, emb)

    def forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        N, T, E = x.shape
        q, k, v = (t.view(N, T, self.n_head, E // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(E, 2))
        # softmax(q k^T / sqrt(head size)) v over the prefix of each position, in torch's fused kernel (makemore
        # writes out the masked softmax: the same numbers)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if train else 0.0, is_causal=True)
        y = y.transpose(1, 2).reshape(N, T, E)  # the heads side by side
        return F.dropout(self.c_proj(y), self.dropout, train)


class Block(nn.Module):
    def __init__(self, emb: int, n_head: int, dropout: float, name: str = "block"):
        super().__init__()
        self.name = name  # what diagnostics call its MLP's GELU layer
        self.ln_1 = nn.LayerNorm(emb)
        self.attn = CausalSelfAttention(emb, n_head, dropout)
        self.ln_2 = nn.LayerNorm(emb)
        self.c_fc = nn.Linear(emb, 4 * emb)
        self.c_proj = nn.Linear(4 * emb, emb)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), train)
        pre = self.c_fc(self.ln_2(x))
        h = F.gelu(pre, approximate="tanh")  # makemore's NewGELU
        tap(self.name, pre, h, tanh=False)  # for diagnostics.probe
        return x + F.dropout(self.c_proj(h), self.dropout, train)


class TransformerNet(nn.Module):
    """One replica: token rows (N, T) -> logits (N, T, vocab)."""

    def __init__(self, vocab_size: int, block_size: int, emb: int, n_layer: int, n_head: int, dropout: float):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, emb)
        self.wpe = nn.Embedding(block_size, emb)
        self.h = nn.ModuleList(Block(emb, n_head, dropout, f"block{i}") for i in range(1, n_layer + 1))
        self.ln_f = nn.LayerNorm(emb)
        self.lm_head = nn.Linear(emb, vocab_size, bias=False)
        self.dropout = dropout

    def forward(self, idx: torch.Tensor, train: bool = False) -> torch.Tensor:
        T = idx.shape[1]
        x = F.dropout(self.wte(idx) + self.wpe(torch.arange(T, device=idx.device)), self.dropout, train)
        for block in self.h:
            x = block(x, train)
        return self.lm_head(self.ln_f(x))


class Transformer(SequenceModel):
    kind = "transformer"

    def __init__(
        self,
        vocab_size: int,
        block_size: int = 16,
        emb: int = 64,
        *,
        n_layer: int = 4,
        n_head: int = 4,
        dropout: float = 0.0,
        replicas: int = 1,
        seed: int = 2147483647,
        device: torch.device | str = "cpu",
    ):
        if emb % n_head:
            raise ValueError(f"emb ({emb}) must be a multiple of n_head ({n_head})")
        check_dropout(dropout)
        net = lambda: TransformerNet(vocab_size, block_size, emb, n_layer, n_head, dropout)  # noqa: E731
        super().__init__(vocab_size, block_size, net, replicas, seed, device)
        self.emb, self.n_layer, self.n_head, self.dropout = emb, n_layer, n_head, dropout
