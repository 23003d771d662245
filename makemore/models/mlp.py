"""The MLP of Bengio et al. 2003 as the lecture writes it, with L tanh layers, for K replicas at once.

    emb    = C[X].view(N, block_size * emb)          # look up and concatenate the context's embeddings
    x      = emb
    x      = tanh(norm(x @ W_l + b_l))               # l = 1..layers; the norm (batch or layer) is optional
    logits = x @ Wout + bout [+ emb @ D]             # D: the paper's direct connections (model.direct)

While training, model.dropout zeroes each tanh output with that probability (and scales the rest by 1/(1 - p)),
as Srivastava et al. 2014; the autograd engine trains it (the fast engine's hand-derived step has no masks).

Every parameter carries a leading replica dimension K (K = 1 for a plain run): matrices (K, in, out) and the
embedding table are 3-D, biases and norm parameters 2-D (the optimizers decay only the former). Replica k is
drawn from its own generator, seeded seed + k, in the lecture's order: C, then each layer's W and b, then Wout,
bout; so with one layer and seed 2147483647 the parameters are the lecture's, bit for bit.

Each layer merges `merges[l]` consecutive positions of its input into one row: the MLP's first layer merges the
whole context (its later layers merge 1), WaveNet (wavenet.py) merges two at every level. The fast engine
(engine/fast/) trains this module's parameters in place, as views into its one flat buffer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from . import plain_eval
from .base import CHUNK, LanguageModel, check_dropout, chunks
from .layers import draw_linear, embed, linear, normalize, tanh
from .taps import tap

NORMS = ("none", "batch", "layer")
BN_EVALS = ("running", "calibrated")  # model.bn_eval: which statistics batch norm evaluates with
TABLES = 1 << 22  # the most table elements (block x vocabulary x hidden) of plain_eval's evaluation


class MLP(LanguageModel):
    kind = "mlp"

    def __init__(
        self,
        vocab_size: int,
        block_size: int = 3,
        emb: int = 10,
        hidden: int = 200,
        *,
        layers: int = 1,
        norm: str = "none",
        direct: bool = False,
        bn_eval: str = "calibrated",
        dropout: float = 0.0,
        replicas: int = 1,
        init: str = "lecture",
        seed: int = 2147483647,
        device: torch.device | str = "cpu",
    ):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if bn_eval not in BN_EVALS:
            raise ValueError(f"bn_eval must be one of {', '.join(BN_EVALS)}, got {bn_eval!r}")
        check_dropout(dropout)
        self.bn_eval, self.dropout = bn_eval, dropout
        self.vocab_size, self.block_size, self.emb, self.hidden = vocab_size, block_size, emb, hidden
        self.replicas, self.norm, self.layers, self.direct = replicas, norm, layers, direct
        self.init = init  # the recipe it was drawn with (diagnostics name the fix for a bad start)
        self.merges = self.layer_merges()
        K, V, E, H = replicas, vocab_size, emb, hidden

        def param(*shape, fill=0.0):
            return torch.nn.Parameter(torch.full(shape, fill, device=device))

        self.C = param(K, V, E)
        for i, fan_in in enumerate(self.fan_ins(), 1):
            setattr(self, f"W{i}", param(K, fan_in, H))
            if self.bias:
                setattr(self, f"b{i}", param(K, H))
            if norm != "none":
                setattr(self, f"gain{i}", param(K, H, fill=1.0))
                setattr(self, f"shift{i}", param(K, H))
            if norm == "batch":
                self.register_buffer(f"running_mean{i}", torch.zeros(K, H, device=device))
                self.register_buffer(f"running_var{i}", torch.ones(K, H, device=device))
        self.Wout, self.bout = param(K, H, V), param(K, V)
        if direct:
            self.D = param(K, block_size * E, V)
        self.init_(init, [seed + k for k in range(replicas)])

    bias = True  # each layer's bias (WaveNet has none before a batch norm, as makemore part 5)

    def layer_merges(self) -> list[int]:
        """How many consecutive positions each layer merges into one row: the whole context, then one."""
        return [self.block_size] + [1] * (self.layers - 1)

    def fan_ins(self) -> list[int]:
        widths = [self.emb] + [self.hidden] * (self.layers - 1)
        return [m * w for m, w in zip(self.merges, widths)]

    @torch.no_grad()
    def init_(self, recipe: str, seeds: list[int]) -> MLP:
        """Replica k from seeds[k] (module docstring); D starts at zero, so the direct connections begin as the
        plain model and learn what they add; gains start at one, shifts at zero."""
        H, V = self.hidden, self.vocab_size
        for k, seed in enumerate(seeds):
            g = torch.Generator().manual_seed(int(seed))
            self.C[k].copy_(torch.randn(V, self.emb, generator=g))
            for i, fan_in in enumerate(self.fan_ins(), 1):
                W, b = draw_linear(fan_in, H, recipe, g)
                getattr(self, f"W{i}")[k].copy_(W)
                if self.bias:
                    getattr(self, f"b{i}")[k].copy_(b)
            W, b = draw_linear(H, V, recipe, g, output=True)
            self.Wout[k].copy_(W)
            self.bout[k].copy_(b)
        return self

    def step_macs(self, batch: int) -> int:
        """3 products (forward, two backward) per layer, each over its rows."""
        BE, H, V, B = self.block_size * self.emb, self.hidden, self.vocab_size, self.block_size
        rows, macs = B, 0
        for merge, fan_in in zip(self.merges, self.fan_ins()):
            rows //= merge
            macs += rows * fan_in * H
        macs += H * V + (BE * V if self.direct else 0)
        return self.replicas * batch * macs * 3

    def running(self, i: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Layer i's batch-norm running mean and variance (None without batch norm)."""
        if self.norm != "batch":
            return None
        return getattr(self, f"running_mean{i}"), getattr(self, f"running_var{i}")

    def forward(self, X: torch.Tensor, train: bool = False) -> torch.Tensor:
        """X: (K, N, block_size) -> logits (K, N, vocab). With batch norm, train=True normalizes by (and updates
        the running statistics from) the batch's statistics; train=False by the running ones."""
        x, emb = self._embedded(X)
        for i in range(1, self.layers + 1):
            x = self._layer(i, x, train)
        logits = linear(x, self.Wout, self.bout)
        return linear(emb, self.D, acc=logits) if self.direct else logits

    def _embedded(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The context's embeddings: one row per position (K, N * B, E), and concatenated (K, N, B * E)."""
        K, N, B = X.shape
        x = embed(self.C, X)  # (K, N, B, E): one row per position
        return x.view(K, N * B, self.emb), x.view(K, N, B * self.emb)

    def _pre(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Layer i's pre-activation: its merge of consecutive positions side by side, times W_i, plus b_i."""
        merge = self.merges[i - 1]
        x = x.reshape(x.shape[0], x.shape[1] // merge, merge * x.shape[2])
        b = getattr(self, f"b{i}", None)
        # batch norm subtracts the batch mean, so a bias before it has gradient exactly 0 (float noise in
        # practice, which Adam would scale up to steps of lr): it is held fixed
        return linear(x, getattr(self, f"W{i}"), b.detach() if b is not None and self.norm == "batch" else b)

    def _layer(self, i: int, x: torch.Tensor, train: bool) -> torch.Tensor:
        hpre = self._pre(i, x)
        if self.norm != "none":  # in fp32 also under bf16 autocast: batch statistics and running averages
            gain, shift = getattr(self, f"gain{i}"), getattr(self, f"shift{i}")
            hpre = normalize(hpre.float(), self.norm, gain, shift, self.running(i), train)
        h = tanh(hpre)
        tap(f"layer{i}", hpre, h)  # for diagnostics.probe
        # drawn from torch's generator, which checkpoints keep; none drawn at 0, so such runs repeat as before
        return torch.nn.functional.dropout(h, self.dropout, True) if train and self.dropout else h

    @contextlib.contextmanager
    def eval_statistics(self, X: torch.Tensor | None) -> Iterator[None]:
        """With batch norm and bn_eval="calibrated": evaluate with the statistics of the current weights over the
        contexts X (makemore part 3's calibration), not the running ones, which lag the weights by ~1/BN_MOMENTUM
        steps; the running statistics are restored after, in place (the fast engine's step holds their
        addresses), so training goes on exactly as it would have."""
        if self.norm != "batch" or self.bn_eval != "calibrated" or X is None or X.shape[0] == 0:
            yield
            return
        saved = [tuple(t.clone() for t in self.running(i)) for i in range(1, self.layers + 1)]
        try:
            self.calibrate_(X)
            yield
        finally:
            for i, (mean, var) in enumerate(saved, 1):
                rm, rv = self.running(i)
                rm.copy_(mean)
                rv.copy_(var)

    @torch.no_grad()
    def calibrate_(self, X: torch.Tensor, chunk: int = CHUNK) -> None:
        """Set each batch norm's statistics (in its running buffers) to those of its pre-activations over the
        contexts X (N, block_size), shared by the replicas: layer by layer, each layer's taken with the layers
        below it normalized by theirs. Mean and unbiased variance over the rows, summed in float64 in chunks."""
        K = self.replicas
        for i in range(1, self.layers + 1):
            total = total_sq = None
            rows = 0
            for start in range(0, X.shape[0], max(1024, chunk // K)):
                x = X[start : start + max(1024, chunk // K)].to(self.device)
                h, _ = self._embedded(x.unsqueeze(0).expand(K, *x.shape))
                for j in range(1, i):
                    h = self._layer(j, h, train=False)
                hpre = self._pre(i, h).double()
                total = hpre.sum(1) if total is None else total + hpre.sum(1)
                total_sq = (hpre * hpre).sum(1) if total_sq is None else total_sq + (hpre * hpre).sum(1)
                rows += hpre.shape[1]
            mean = total / rows
            var = (total_sq - rows * mean * mean) / max(rows - 1, 1)
            rm, rv = self.running(i)
            rm.copy_(mean.to(rm.dtype))
            rv.copy_(var.clamp(min=0).to(rv.dtype))

    @torch.no_grad()
    def evaluate(self, X: torch.Tensor, Y: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
        """As LanguageModel.evaluate; one plain layer takes a leaner path per replica (_plain_losses)."""
        if self.norm != "none" or self.layers != 1:
            return super().evaluate(X, Y, chunk)
        total = torch.zeros(self.replicas, dtype=torch.float64)
        lib = self._plain_eval_library()
        if lib is not None:  # plain_eval.c, one replica at a time with the whole chunk
            bufs: dict = {}
            for k in range(self.replicas):
                f = plain_eval.Folded(*(t[k].detach() for t in (self.C, self.W1, self.b1, self.Wout, self.bout)))
                for x, y in chunks(X, Y, 1, self.device, chunk):
                    total[k] += plain_eval.summed_loss(lib, f, x, y, bufs)
            return (total / max(X.shape[0], 1)).float()
        folded = [self._folded(k) for k in range(self.replicas)]
        for x, y in chunks(X, Y, self.replicas, self.device, chunk):
            for k in range(self.replicas):
                ce = torch.nn.functional.cross_entropy(self._plain_logits(k, x, folded[k]), y, reduction="none")
                total[k] += ce.cpu().double().sum()  # each example's loss in float64: the chunks do not matter
        return (total / max(X.shape[0], 1)).float()

    def _plain_eval_library(self):
        """plain_eval.c where it applies: the CPU, fp32 weights, no direct connections, tables of at most
        TABLES elements (a large vocabulary's tables would outgrow the product they replace)."""
        if self.device.type != "cpu" or self.direct or self.W1.dtype != torch.float32:
            return None
        if self.block_size * self.vocab_size * self.hidden > TABLES:
            return None
        return plain_eval.library()

    def _folded(self, k: int) -> tuple[torch.Tensor, ...]:
        """Replica k's weights folded for _plain_logits: [W1; b1] doubled (the product then gives 2y, sigmoid's
        argument), and the output layer taking s = sigmoid(2y) for h = 2s - 1: h Wout + bout = s (2 Wout) +
        (bout - the column sums of Wout)."""
        W1a = 2 * torch.cat([self.W1[k], self.b1[k].unsqueeze(0)])
        return W1a, 2 * self.Wout[k], self.bout[k] - self.Wout[k].sum(0)

    def _plain_logits(self, k: int, x: torch.Tensor, folded: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """forward() of replica k for one plain layer, for large no-grad batches: [emb | 1] times the folded
        weights, one sigmoid pass and the output product (no bias pass, no 2s - 1 pass)."""
        W1a, Wo2, bo2 = folded
        n, B, E = x.shape[0], self.block_size, self.emb
        emb_a = torch.ones(n, B * E + 1, device=x.device)
        emb_a[:, : B * E] = torch.index_select(self.C[k], 0, x.reshape(-1)).view(n, B * E)
        logits = torch.addmm(bo2, torch.mm(emb_a, W1a).sigmoid_(), Wo2)
        return logits.addmm_(emb_a[:, : B * E], self.D[k]) if self.direct else logits
