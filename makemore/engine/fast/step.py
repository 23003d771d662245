"""The fast step: forward, hand-derived backward and update of a stack of tanh layers (the MLP, WaveNet), fused and
allocation-free, on the parameters laid out by layout.py.

At batch 32 a step is dominated by per-operation overhead, not by arithmetic, so this step issues as few operations
as it can (profiled with torch.profiler; bench/speed.py and bench/precision.py time it, docs/performance.md has the
figures):
  - gradients are the closed forms of makemore part 4 instead of autograd's graph;
  - a bias rides along as the last row of its weight matrix against a ones column of the input where the input
    allows one (layout.py's "aug"), and weight updates are fused into the gradient products:
    `W.addmm_(a^T, d, alpha=-lr/N)` computes W -= lr * a^T d / N in one call; the embedding rows get one
    `index_add_`;
  - tanh(x) is computed as 2*sigmoid(2x) - 1 (this torch build's CPU tanh is slower than its sigmoid);
  - every intermediate lives in a buffer preallocated for the batch shape (`out=` everywhere), each layer's output
    written straight into the buffer the layer above reads (WaveNet's regrouping of two rows into one is a view);
  - nothing reads a value back to the host: the picked log-probabilities go into a tensor slot.
K replicas go through the same calls as batched products (leading dimension K); K = 1 uses plain 2-D products.

The math, per replica and layer, for R rows (N examples; WaveNet's level l has N * block_size / 2^l), p =
softmax(logits), Y one-hot, x the layer's input, y = norm(x W + b), h = tanh(y):
    dlogits = (p - Y) / N
    dWout = h^T dlogits            dbout = sum_rows dlogits          dh = dlogits Wout^T
    dy = dh * (1 - h^2)                                                (tanh' = 1 - tanh^2)
    dW = x^T dhpre                 db = sum_rows dhpre               dx = dhpre W^T   (the layer below's dh)
    dC[ix] += demb                                                     (scatter back to the looked-up rows)
With normalization y = xhat * gain + shift, xhat = (hpre - mean) * rstd, the backward through it is
    dxhat = dy * gain,  dhpre = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
with the means over the rows (batch norm) or over the units (layer norm).
  - tanh's derivative comes from s = sigmoid(2y) as 1 - tanh^2 = 4 s (1 - s): one sigmoid_backward pass; the
    factor 4 (a power of two: exact) rides in the alphas of the products and updates that follow;
  - with one replica, layer and batch norm run torch's fused kernels (native_layer_norm / native_batch_norm and
    their backwards), with 2 * gain and 2 * shift so the norm writes 2y for the sigmoid directly; K replicas use
    the formulas above (one gain per replica);
  - with one replica on the CPU, where fused.py can build fused_norm.c, the norm, the sigmoid and h = 2s - 1 are
    one C pass over the rows (batch norm: two, its statistics first), the backward as few.

precision="bf16" (train.precision): the products read bfloat16 copies of the operands and accumulate in fp32; the
weights stay fp32 masters (one bf16 copy of all the weight matrices, adjacent in the flat buffer, before each step),
the weight-gradient products' bf16 results are converted and added into them in one call, and every elementwise
pass runs in fp32 (this torch's elementwise kernels are no faster on bf16). Evaluation is always fp32.

Weight decay (on C and the weight matrices) is SGD's p -= lr * (g + wd * p), applied after the gradients that read
those weights were computed: C is scaled by c = 1 - lr * wd, and each matrix gets c as the beta of its update
product (W = c W + alpha a^T d: no pass of its own). Bias rows must not decay, so they are divided by c first:
c (b / c) + g = b + g (kept aside and added back instead where c is near 0).

With a `grad` buffer (shaped like the flat buffer) the step writes the gradients there instead of updating, for
another optimizer (update.FlatUpdate) to apply: the same products with alpha = 1/N, the embedding rows accumulated
into the zeroed gradient of C.
"""

from __future__ import annotations

import math

import torch

from ...device import PRECISIONS
from ...models.layers import BN_EPS, BN_MOMENTUM
from .fused import library as fused_library
from .layout import FlatLayout

aten = torch.ops.aten


class Layer:
    """One tanh layer's views and buffers (FastStep._layer fills them in)."""

    i: int  # 1-based
    mode: str  # layout.py's: aug | sep | none
    rows: int  # rows per replica
    inp: torch.Tensor  # the input as the product reads it (with the ones column in mode aug)
    inpT: torch.Tensor  # ... transposed, for the weight gradient
    W: torch.Tensor  # the master (fp32) weight (with the bias row in mode aug)
    Wp: torch.Tensor  # what the products read of it (a bf16 copy with train.precision=bf16)
    WT: torch.Tensor  # Wp without the bias row, transposed, for dx
    b: torch.Tensor | None  # the bias: the last row of W (aug), its own (sep), or None
    hpre: torch.Tensor  # the product's result (bf16 or fp32)
    hpre32: torch.Tensor  # ... in fp32, for the elementwise passes
    s: torch.Tensor  # sigmoid(2y) (fp32)
    h: torch.Tensor  # 2s - 1 = tanh(y): a view of the buffer the layer above reads
    dh: torch.Tensor  # the gradient at h (dt), written by the product of the layer above
    dy: torch.Tensor  # dL/dy / 4 (fp32)
    dhpre: torch.Tensor | None  # dL/dhpre / 4 as bf16 products read it (low precision only)
    dx: torch.Tensor  # where dx = dhpre W^T goes: the layer below's dh, or the embeddings' gradient
    native: bool  # torch's fused norm kernels (one replica)
    fused: bool  # fused_norm.c (layer norm, one replica, the CPU)


class FastStep:
    """One training step of the model laid out in `layout` for batches of `batch_size` examples per replica."""

    def __init__(
        self,
        layout: FlatLayout,
        batch_size: int,
        weight_decay: float = 0.0,
        grad: torch.Tensor | None = None,
        precision: str = "fp32",
        fused: bool = True,
    ):
        self.layout, self.N, self.wd, self.grad = layout, batch_size, weight_decay, grad
        if grad is not None and weight_decay:
            raise ValueError("with a grad buffer the optimizer applies the weight decay")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.dt = PRECISIONS[precision]  # the products' operand type
        self.low = self.dt != torch.float32
        one_replica = layout.replicas == 1
        self.sq = (lambda t: t[0]) if one_replica else (lambda t: t)  # drop the K dimension when K = 1
        self._mm, self._addmm = (torch.mm, torch.addmm) if one_replica else (torch.bmm, torch.baddbmm)
        self._addmm_ = torch.Tensor.addmm_ if one_replica else torch.Tensor.baddbmm_
        self.norm = layout.norm
        self._weights(layout)
        self._embeddings(layout)
        self.layers: list[Layer] = []
        for i in range(1, layout.layers + 1):
            self.layers.append(self._layer(layout, i))
        self._output(layout)
        self._norms_and_gradients(layout)
        self.fused = False
        for layer in self.layers:
            layer.fused = fused and self._use_fused(layer)
            self.fused |= layer.fused
        self.one = self._one_layer_plan()

    # -- the buffers --------------------------------------------------------------------------------------------

    def buf(self, *shape, dtype=torch.float32, fill=None) -> torch.Tensor:
        dev = self.layout.device
        if fill is None:
            return torch.empty(*shape, dtype=dtype, device=dev)
        return torch.full(shape, fill, dtype=dtype, device=dev)

    def _weights(self, layout: FlatLayout) -> None:
        """The masters and what the products read of them: the weight matrices are adjacent in the flat buffer,
        so their bf16 copies (train.precision=bf16) and conversions are one call over that range."""
        st, L = layout.storage, layout.layers
        first, last = st["W1a"], st["Wouta"]
        self.lo, self.hi = first.storage_offset(), last.storage_offset() + last.numel()
        self.W_range = layout.flat[self.lo : self.hi]
        names = [f"W{i}a" for i in range(1, L + 1)] + ["Wouta"]
        self.Wp = {n: st[n] for n in names}  # what the products read: the masters, or bf16 copies made each step
        if self.low:
            self.Wp_range = torch.empty_like(self.W_range, dtype=self.dt)
            self.Wp = self._mirror(self.Wp_range, {n: st[n] for n in names})
            # the weight-gradient products' bf16 results, laid out as the weights: one add puts all into the masters
            self.gWp_range = torch.empty_like(self.Wp_range)
            if self.grad is None:  # ... converted (with a grad buffer they are converted into it)
                self.gW32_range = torch.empty_like(self.W_range)
            self.gWp = self._mirror(self.gWp_range, {n: st[n] for n in names})

    def _mirror(self, buffer: torch.Tensor, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Views of `buffer` (a copy of the flat range from offset self.lo) laid out as `tensors`."""
        return {n: buffer[t.storage_offset() - self.lo :][: t.numel()].view(t.shape) for n, t in tensors.items()}

    def _embeddings(self, layout: FlatLayout) -> None:
        K, N, V, E, B = layout.replicas, self.N, layout.vocab_size, layout.emb, layout.block_size
        self.C2 = layout.storage["C"].view(K * V, E)  # rows of all replicas; batch indices carry a k*V offset
        self.rows = self.buf(K * N * B, E)  # looked-up embedding rows
        self.rows3 = self.sq(self.rows.view(K, N, B * E))
        if layout.modes[0] == "aug":  # the first layer reads [emb | 1]: the rows are copied in
            emb_a = self.buf(K, N, B * E + 1, dtype=self.dt, fill=1.0)
            self.emb_a, self.emb = emb_a, self.sq(emb_a[:, :, : B * E])
        self.rows_p = self.buf(K * N * B, E, dtype=self.dt) if self.low else self.rows  # ... or read as they are
        self.demb = self.buf(K, N, B * E, dtype=self.dt)  # the embeddings' gradient, as products write it
        self.demb32 = self.buf(K, N, B * E) if self.low else self.demb  # ... for the fp32 embedding table
        self.demb_rows = self.demb32.view(K * N * B, E)
        self.demb_sq = self.sq(self.demb)

    def _layer(self, layout: FlatLayout, i: int) -> Layer:
        K, H, sq, dt = layout.replicas, layout.hidden, self.sq, self.dt
        layer = Layer()
        layer.i, layer.mode = i, layout.modes[i - 1]
        layer.rows = self.N * layout.block_size // math.prod(layout.merges[:i])
        fan_in = layout.fan_ins[i - 1]
        if layer.mode == "aug":  # [x | 1]: the embeddings copied in, or the layer below's output, row for row
            inp = self.emb_a if i == 1 else self.layers[i - 2].out
        else:  # the rows below, consecutive ones side by side (a view)
            inp = (self.rows_p if i == 1 else self.layers[i - 2].out).view(K, layer.rows, fan_in)
        layer.inp, layer.inpT = sq(inp), sq(inp.transpose(1, 2))
        st = layout.storage
        layer.W, Wp = sq(st[f"W{i}a"]), self.Wp[f"W{i}a"]
        layer.Wp, layer.WT = sq(Wp), sq(Wp[:, :fan_in].transpose(1, 2))
        layer.b, layer.b_keep = None, None
        if layer.mode == "aug":  # the bias row, kept aside across a decaying update where needed (docstring)
            layer.b = layer.W[..., fan_in, :]
            layer.b_keep = torch.empty_like(layer.b)
        elif layer.mode == "sep":
            layer.b = sq(st[f"b{i}"])
        layer.hpre = sq(self.buf(K, layer.rows, H, dtype=dt))
        layer.hpre32 = sq(self.buf(K, layer.rows, H)) if self.low else layer.hpre
        layer.s = sq(self.buf(K, layer.rows, H))
        layer.dh = sq(self.buf(K, layer.rows, H, dtype=dt))
        layer.dy = sq(self.buf(K, layer.rows, H)) if self.low else layer.dh
        layer.dhpre = sq(self.buf(K, layer.rows, H, dtype=dt)) if self.low else None
        below = self.demb if i == 1 else self.layers[i - 2].dh_full  # where dx goes, regrouped as the input
        layer.dx = sq(below.view(K, layer.rows, fan_in))
        layer.dh_full = layer.dh if K > 1 else layer.dh.unsqueeze(0)
        # the output's buffer: what the layer above reads (with a ones column where it reads it "aug")
        above = layout.modes[i] if i < layout.layers else "out"
        if above in ("aug", "out"):
            width = H + 1 + (layout.block_size * layout.emb if above == "out" and layout.direct else 0)
            layer.out = self.buf(K, layer.rows, width, dtype=dt, fill=1.0)
        else:
            layer.out = self.buf(K, layer.rows, H, dtype=dt)
        layer.h = sq(layer.out[:, :, :H])
        layer.native = layout.norm != "none" and K == 1 and (layout.norm == "layer" or layer.rows > 1)
        return layer

    def _output(self, layout: FlatLayout) -> None:
        K, H, sq = layout.replicas, layout.hidden, self.sq
        top = self.layers[-1]
        self.h_a, self.h_aT = sq(top.out), sq(top.out.transpose(1, 2))
        Wo = self.Wp["Wouta"]
        self.Wo, self.Wop, self.WoT = sq(layout.storage["Wouta"]), sq(Wo), sq(Wo[:, :H].transpose(1, 2))
        self.bout = self.Wo[..., H, :]
        self.bout_keep = torch.empty_like(self.bout)
        if layout.direct:  # the direct connections D: the output layer's rows after bout (layout.py)
            self.h_emb = sq(top.out[:, :, H + 1 :])
            self.DT = sq(Wo[:, H + 1 :].transpose(1, 2))
        self.logits = sq(self.buf(K, self.N, layout.padded, dtype=self.dt))
        self.dlogits = torch.empty_like(self.logits) if self.low else None  # softmax - onehot, as bf16 reads it
        self.minus_one = sq(self.buf(K, self.N, 1, fill=-1.0))
        self.neg_one = -torch.ones((), device=layout.device)

    def _norms_and_gradients(self, layout: FlatLayout) -> None:
        """The norms' doubled gains and shifts, and views of the gradient buffer laid out as the parameters."""
        K, V, E, H, st, grad = layout.replicas, layout.vocab_size, layout.emb, layout.hidden, layout.storage, self.grad
        if layout.norm != "none":
            # 2 * gain, 2 * shift of every layer (the norm writes 2y), from them all (adjacent) in one call
            g0 = st["gain1"].storage_offset()
            self.gain_shift = layout.flat[g0 : g0 + 2 * layout.layers * K * H].view(layout.layers, 2, K, H)
            self.gain_shift2 = torch.empty_like(self.gain_shift)
            for layer in self.layers:
                layer.gain, layer.shift = st[f"gain{layer.i}"], st[f"shift{layer.i}"]
                layer.gain_shift2 = self.gain_shift2[layer.i - 1]
                layer.gain2, layer.shift2 = layer.gain_shift2.unbind(0)
                layer.gnorm = (layer.gain, layer.shift)
        if grad is not None:  # views of the gradient buffer laid out as the parameters (same offsets)
            g = {n: grad.as_strided(t.shape, t.stride(), t.storage_offset()) for n, t in st.items()}
            self.gC2, self.gWo = g["C"].view(K * V, E), self.sq(g["Wouta"])
            for layer in self.layers:
                layer.gW = self.sq(g[f"W{layer.i}a"])
                layer.gb = self.sq(g[f"b{layer.i}"]) if layer.mode == "sep" else None
                if layout.norm != "none":
                    layer.gnorm = (g[f"gain{layer.i}"], g[f"shift{layer.i}"])
            self.gW_range = grad[self.lo : self.hi]

    def _use_fused(self, layer: Layer) -> bool:
        """The norm and tanh in one C pass each way (fused.py), where it is built: one replica on the CPU."""
        lib = fused_library() if layer.native and self.layout.device.type == "cpu" else None
        if lib is None:
            return False
        R, H, low, dev = layer.rows, self.layout.hidden, int(self.low), self.layout.device
        gain_t, shift_t = layer.gnorm
        stats = R if self.norm == "layer" else H  # per row (layer norm) or per column (batch norm)
        layer.mean, layer.rstd = torch.empty(stats, device=dev), torch.empty(stats, device=dev)
        dx = layer.dhpre if self.low else layer.dh  # fp32: dx overwrites dh row by row (the kernel reads a row first)
        # the input: the product's result, or in bf16 with a bias of its own the fp32 sum it was added in
        x, x_low = (layer.hpre32, 0) if self.low and layer.mode == "sep" else (layer.hpre, low)
        # raw addresses for the C calls: this step holds every tensor behind them (its buffers, views of the flat
        # buffer and of grad, the module's running statistics), and the model changes in place (load_state_dict
        # copies), so they stay valid; layer.gain is followed by layer.shift in the flat buffer: the kernel reads both
        p = [x, layer.gain, layer.s, layer.h, layer.mean, layer.rstd, layer.dh]
        x, gain_shift, s, h, mean, rstd, dh = (t.data_ptr() for t in p)
        if self.norm == "layer":
            layer.fused_forward = (lib.fused_norm_tanh_forward, x, x_low, gain_shift, BN_EPS, s, h, low)
            backward = lib.fused_norm_tanh_backward
        else:
            rm, rv = (t.data_ptr() for t in self.layout.running(layer.i))
            layer.fused_forward = (lib.fused_batchnorm_tanh_forward, x, x_low, gain_shift, BN_EPS, BN_MOMENTUM)
            layer.fused_forward += (rm, rv, s, h, low)
            backward = lib.fused_batchnorm_tanh_backward
        layer.fused_forward += (layer.h.stride(0), mean, rstd, R, H)
        layer.fused_backward = (backward, dh, low, s, x, x_low, mean, rstd, gain_shift)
        layer.fused_backward_tail = (gain_t.data_ptr(), shift_t.data_ptr(), dx.data_ptr(), low, R, H)
        return True

    # -- one step -----------------------------------------------------------------------------------------------

    def batches(
        self, X: torch.Tensor, Y: torch.Tensor, ix: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-step arguments for S steps from batch indices ix (S, K, N) into the training set:
        the rows of C to look up (offset by k*V for replica k) and the targets as (K, N, 1)."""
        S, K, N = ix.shape
        offset = (torch.arange(K, device=ix.device) * self.layout.vocab_size).view(1, K, 1, 1)
        rows = (X[ix] + offset).view(S, -1)
        targets = Y[ix].view(S, K, N, 1)
        if K == 1:
            targets = targets.view(S, N, 1)
        return rows.unbind(0), targets.unbind(0)

    def __call__(self, ix: torch.Tensor, Y: torch.Tensor, lr: float, picked: torch.Tensor) -> None:
        """ix: (K*N*block_size,) rows of C; Y: (K, N, 1) targets (K dim dropped when K = 1);
        picked: a slot shaped like Y that receives log p(target) of each example (the loss, negated)."""
        if self.one is not None:
            self._one_layer(ix, Y, lr, picked, *self.one)
            return
        step = -lr / self.N if self.grad is None else 1.0 / self.N  # update scale, or gradient scale
        step4 = 4.0 * step  # the hidden layers' gradients are kept / 4 (see the module docstring)
        if self.grad is not None:
            self.grad.zero_()  # C's rows (and the norms') accumulate; the products overwrite
        dl = self._forward_pass(ix, Y, picked)
        self._mm(dl, self.WoT, out=self.layers[-1].dh)
        for layer in reversed(self.layers):
            layer.g = self._backward(layer, step4)  # dL/dhpre / 4, as the products read it
            alpha = step4 if layer.i == 1 else 4.0  # the embeddings' gradient scaled for their update
            self._addmm(layer.dx, layer.g, layer.WT, beta=0, alpha=alpha, out=layer.dx)
        if self.layout.direct:  # emb also reaches the logits through D
            self._addmm_(self.demb_sq, dl, self.DT, alpha=step)
        if self.low:
            self.demb32.copy_(self.demb)
        if self.grad is None and not (self.low or self.wd):  # the lecture's case inline: at batch 32 a call's
            self._addmm_(self.Wo, self.h_aT, dl, alpha=step)  # Python overhead is measurable (bench/speed.py)
            for layer in reversed(self.layers):
                self._addmm_(layer.W, layer.inpT, layer.g, alpha=step4)
                if layer.mode == "sep":
                    layer.b.add_(layer.g.sum(-2, dtype=torch.float32), alpha=step4)
            self.C2.index_add_(0, ix, self.demb_rows)
        else:
            self._apply(ix, lr, dl, step, step4)

    def _one_layer_plan(self) -> tuple | None:
        """The tensors of the lecture's case (one layer reading [emb | 1], one replica, fp32, plain SGD without
        decay, no norm or a fused one, no direct connections) for _one_layer, or None for the general path."""
        layer = self.layers[0]
        general = self.layout.layers > 1 or self.layout.replicas > 1 or self.low or self.grad is not None
        if general or self.wd or self.layout.direct or layer.mode != "aug" or not (self.norm == "none" or layer.fused):
            return None
        fwd = layer.fused_forward if layer.fused else None
        bwd = (*layer.fused_backward, layer.fused_backward_tail) if layer.fused else None
        return (layer, fwd, bwd)

    def _one_layer(self, ix, Y, lr, picked, layer, fwd, bwd) -> None:
        """__call__'s steps for the lecture's case in straight-line code: at batch 32 a step is a few small torch
        calls, so the general path's loops and method calls over the layers are a measurable part of it."""
        step = -lr / self.N
        step4 = 4.0 * step
        torch.index_select(self.C2, 0, ix, out=self.rows)
        self.emb.copy_(self.rows3)
        if fwd is None:  # no norm: the product computes 2 hpre = 2y
            torch.addmm(layer.hpre, layer.inp, layer.Wp, beta=0, alpha=2.0, out=layer.hpre)
            torch.sigmoid(layer.hpre, out=layer.s)
            torch.add(self.neg_one, layer.s, alpha=2.0, out=layer.h)
        else:
            torch.mm(layer.inp, layer.Wp, out=layer.hpre)
            fwd[0](*fwd[1:])
        torch.mm(self.h_a, self.Wop, out=self.logits)
        lsm = torch.log_softmax(self.logits, dim=-1)
        torch.gather(lsm, -1, Y, out=picked)
        dl = lsm.exp_()
        dl.scatter_add_(-1, Y, self.minus_one)
        torch.mm(dl, self.WoT, out=layer.dh)
        if bwd is None:
            aten.sigmoid_backward.grad_input(layer.dh, layer.s, grad_input=layer.dh)
        else:
            bwd[0](*bwd[1:-1], step4, *bwd[-1])
        layer.s_now, layer.g = layer.s, layer.dh
        torch.addmm(layer.dx, layer.dh, layer.WT, beta=0, alpha=step4, out=layer.dx)
        self.Wo.addmm_(self.h_aT, dl, alpha=step)
        layer.W.addmm_(layer.inpT, layer.dh, alpha=step4)
        self.C2.index_add_(0, ix, self.demb_rows)

    def _forward_pass(self, ix: torch.Tensor, Y: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
        """Embeddings, layers, logits and the picked log-probabilities; returns dlogits = softmax - onehot, as
        the products read it (the 1/N goes into the updates' alpha)."""
        if self.low:
            self.Wp_range.copy_(self.W_range)
        torch.index_select(self.C2, 0, ix, out=self.rows)
        if self.layers[0].mode == "aug":
            self.emb.copy_(self.rows3)
        elif self.low:
            self.rows_p.copy_(self.rows)
        if self.layout.direct:
            self.h_emb.copy_(self.rows3)
        if self.norm != "none" and not all(layer.fused for layer in self.layers):
            torch.mul(self.gain_shift, 2.0, out=self.gain_shift2)  # 2 gain, 2 shift: the norms write 2y
        for layer in self.layers:
            self._forward(layer)
        self._mm(self.h_a, self.Wop, out=self.logits)
        lsm = torch.log_softmax(self.logits, dim=-1, dtype=torch.float32 if self.low else None)
        torch.gather(lsm, -1, Y, out=picked)
        dlogits = lsm.exp_()
        dlogits.scatter_add_(-1, Y, self.minus_one)
        return self.dlogits.copy_(dlogits) if self.low else dlogits

    def _forward(self, layer: Layer) -> None:
        """x -> hpre -> s = sigmoid(2y) and h = 2s - 1 = tanh(y), through the norm if any."""
        two = 2.0 if self.norm == "none" else 1.0  # without a norm the product computes 2 hpre = 2y directly
        if layer.mode == "sep" and not self.low:
            self._addmm(layer.b.unsqueeze(-2), layer.inp, layer.Wp, beta=two, alpha=two, out=layer.hpre)
        elif two == 2.0:
            self._addmm(layer.hpre, layer.inp, layer.Wp, beta=0, alpha=2.0, out=layer.hpre)
        else:
            self._mm(layer.inp, layer.Wp, out=layer.hpre)
        if self.low:
            layer.hpre32.copy_(layer.hpre)
            if layer.mode == "sep":  # its bias in fp32 (the products read bf16)
                layer.hpre32.add_(layer.b.unsqueeze(-2), alpha=two)
        if layer.fused:
            layer.fused_forward[0](*layer.fused_forward[1:])
            layer.s_now = layer.s
            return
        if self.norm == "none":
            s = torch.sigmoid(layer.hpre32, out=layer.s)
        else:
            s = self._norm_forward(layer).sigmoid_()
        layer.s_now = s
        torch.add(self.neg_one, s, alpha=2.0, out=layer.h)  # tanh(y) = 2 sigmoid(2y) - 1

    def _backward(self, layer: Layer, step4: float) -> torch.Tensor:
        """dh -> dL/dhpre / 4 as the products read it (bf16 or fp32); the norm's gain and shift get step4 times
        their gradients."""
        if layer.fused:
            fn, *args = layer.fused_backward
            fn(*args, step4, *layer.fused_backward_tail)
            return layer.dhpre if self.low else layer.dh
        if self.low:  # a conversion, then the fp32 kernel: faster than sigmoid_backward on mixed types
            layer.dy.copy_(layer.dh)
        dy = aten.sigmoid_backward.grad_input(layer.dy, layer.s_now, grad_input=layer.dy)  # dL/dy / 4
        dx = dy if self.norm == "none" else self._norm_backward(layer, dy, step4)  # dL/dhpre / 4, fp32
        return layer.dhpre.copy_(dx) if self.low else dx

    # -- the updates --------------------------------------------------------------------------------------------

    def _apply(self, ix: torch.Tensor, lr: float, dl: torch.Tensor, step: float, step4: float) -> None:
        """The weight gradients into the gradient buffer, or the update with weight decay or bf16 products."""
        if self.grad is not None:
            self._gradients(ix, dl, step, step4)
            return
        # update: the gradients that read the weights are done, so decay and step may change them now
        c = 1.0 - lr * self.wd
        keep = self.wd and abs(c) < 1e-3  # lr * wd near 1: b / c below would lose b, so b is kept aside
        rows = [self.bout] + [layer.b for layer in self.layers if layer.mode == "aug"]  # biases inside matrices
        keeps = [self.bout_keep] + [layer.b_keep for layer in self.layers if layer.mode == "aug"]
        if self.wd:
            self.C2.mul_(c)
            for b, kept in zip(rows, keeps):
                if keep:
                    kept.copy_(b)
                else:  # W = c W + g decays the bias rows too; c (b / c) + g = b + g undoes it
                    b.mul_(1.0 / c)
        if self.low:  # the bf16 results, converted, then one add of all into the masters: W = c W + g
            self._weight_grads(self.gWp, dl, step, step4)
            self.gW32_range.copy_(self.gWp_range)
            torch.add(self.gW32_range, self.W_range, alpha=c, out=self.W_range)
        else:  # fp32 fuses the update into the products
            self._addmm_(self.Wo, self.h_aT, dl, beta=c, alpha=step)
            for layer in reversed(self.layers):
                self._addmm_(layer.W, layer.inpT, layer.g, beta=c, alpha=step4)
        for layer in self.layers:
            if layer.mode == "sep":  # a bias of its own does not decay
                layer.b.add_(layer.g.sum(-2, dtype=torch.float32), alpha=step4)
        if keep:
            for b, kept in zip(rows, keeps):
                b.add_(kept, alpha=1.0 - c)
        self.C2.index_add_(0, ix, self.demb_rows)

    def _gradients(self, ix: torch.Tensor, dl: torch.Tensor, step: float, step4: float) -> None:
        """The gradients (times N) into the gradient buffer, for update.FlatUpdate."""
        if self.low:  # the bf16 results, then one conversion into the fp32 gradient buffer
            self._weight_grads(self.gWp, dl, step, step4)
            self.gW_range.copy_(self.gWp_range)
        else:
            self._weight_grads(None, dl, step, step4)
        for layer in self.layers:
            if layer.mode == "sep":
                torch.mul(layer.g.sum(-2, dtype=torch.float32), step4, out=layer.gb)
            elif layer.mode == "aug" and self.norm == "batch":  # a bias before batch norm has gradient exactly 0
                layer.gW[..., -1, :].zero_()  # (float noise here): hold it
        self.gC2.index_add_(0, ix, self.demb_rows)

    def _weight_grads(self, into: dict[str, torch.Tensor] | None, dl: torch.Tensor, step: float, step4: float):
        """Wout's gradient (step [h | 1]^T dl) and each layer's (step4 x^T dhpre), written into `into` (the bf16
        buffers, laid out as the weights) or the gradient buffer's views."""
        gWo = self.gWo if into is None else self.sq(into["Wouta"])
        self._addmm(gWo, self.h_aT, dl, beta=0, alpha=step, out=gWo)
        for layer in reversed(self.layers):
            gW = layer.gW if into is None else self.sq(into[f"W{layer.i}a"])
            self._addmm(gW, layer.inpT, layer.g, beta=0, alpha=step4, out=gW)

    # -- normalization of the hidden pre-activations (batch or layer norm) --------------------------------------

    def _norm_forward(self, layer: Layer) -> torch.Tensor:
        """2y = 2 (norm(hpre) * gain + shift), the sigmoid's input; batch norm also updates the running
        statistics. The fused kernels' out= forms copy (autogenerated): their results are taken as they come."""
        K, H, hpre = self.layout.replicas, self.layout.hidden, layer.hpre32
        if layer.native:
            g2, s2 = layer.gain2.view(H), layer.shift2.view(H)
            if self.norm == "layer":
                y2, layer.mean, layer.rstd = torch.native_layer_norm(hpre, [H], g2, s2, BN_EPS)
            else:  # running_var gets the unbiased batch variance, as the formulas below
                rm, rv = (t.view(H) for t in self.layout.running(layer.i))
                y2, layer.mean, layer.rstd = torch.native_batch_norm(hpre, g2, s2, rm, rv, True, BN_MOMENTUM, BN_EPS)
            return y2
        dim = -2 if self.norm == "batch" else -1  # batch: over the rows; layer: over the units
        mean = hpre.mean(dim, keepdim=True)
        xc = hpre - mean
        var = (xc * xc).mean(dim, keepdim=True)
        layer.rstd, layer.dim = torch.rsqrt(var + BN_EPS), dim
        layer.xhat = xc.mul_(layer.rstd)
        if self.norm == "batch":
            R = layer.rows
            rm, rv = self.layout.running(layer.i)
            rm.lerp_(mean.view(K, H), BN_MOMENTUM)
            rv.lerp_(var.view(K, H) * (R / max(R - 1, 1)), BN_MOMENTUM)
        sq = self.sq
        return torch.addcmul(sq(layer.shift2.unsqueeze(1)), layer.xhat, sq(layer.gain2.unsqueeze(1)), out=layer.s)

    def _norm_backward(self, layer: Layer, dy: torch.Tensor, alpha: float) -> torch.Tensor:
        """dy (through the norm) -> dhpre; gain and shift get alpha * their gradients."""
        K, H = self.layout.replicas, self.layout.hidden
        gain, shift = layer.gain, layer.shift
        if layer.native:
            mask = [True, True, True]
            if self.norm == "layer":
                dx, dgain, dshift = aten.native_layer_norm_backward(
                    dy, layer.hpre32, [H], layer.mean, layer.rstd, gain.view(H), shift.view(H), mask
                )
            else:
                rm, rv = (t.view(H) for t in self.layout.running(layer.i))
                dx, dgain, dshift = aten.native_batch_norm_backward(
                    dy, layer.hpre32, gain.view(H), rm, rv, layer.mean, layer.rstd, True, BN_EPS, mask
                )
        else:
            xhat, dim = layer.xhat, layer.dim
            dxhat = dy * self.sq(gain.unsqueeze(1))
            dx = layer.rstd * (dxhat - dxhat.mean(dim, keepdim=True) - xhat * (dxhat * xhat).mean(dim, keepdim=True))
            dgain, dshift = (dy * xhat).view(K, -1, H).sum(1), dy.view(K, -1, H).sum(1)
        gain_t, shift_t = layer.gnorm
        gain_t.add_(dgain.view(K, H), alpha=alpha)
        shift_t.add_(dshift.view(K, H), alpha=alpha)
        return dx
