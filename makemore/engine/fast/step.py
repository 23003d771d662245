"""The fast SGD step: forward, hand-derived backward and update of the MLP, fused and allocation-free.

At batch 32 a step is dominated by per-operation overhead, not by arithmetic, so this step is written to issue
as few operations as possible (profiled with torch.profiler; bench/speed.py and bench/precision.py time it,
docs/performance.md has the figures):
  - gradients are the closed forms of makemore part 4 instead of autograd's graph;
  - biases ride along as the last row of their weight matrix against a ones column of the input, and
    weight updates are fused into the gradient products: `W.addmm_(a^T, d, alpha=-lr/N)` computes
    W -= lr * a^T d / N in one call; the embedding rows get one `index_add_` (faster than an accumulating
    index_put_);
  - tanh(x) is computed as 2*sigmoid(2x) - 1: this torch build's CPU tanh is slower than its sigmoid;
  - the output layer is padded to a multiple of 16 classes (layout.py), which MKL multiplies faster;
  - every intermediate lives in a buffer preallocated for the batch shape (`out=` everywhere);
  - nothing reads a value back to the host: the picked log-probabilities go into a tensor slot.
K replicas go through the same calls as batched products (leading dimension K); K = 1 uses the
plain 2-D products, which are faster than batched ones of batch size 1.

The math, per replica, for a batch of N examples (p = softmax(logits), Y one-hot):
    dlogits = (p - Y) / N
    dW2 = h^T dlogits            db2 = sum_n dlogits          dh = dlogits W2^T
    dhpre = dh * (1 - h^2)                                      (tanh' = 1 - tanh^2)
    dW1 = emb^T dhpre            db1 = sum_n dhpre            demb = dhpre W1^T
    dC[ix] += demb                                              (scatter back to the looked-up rows)
With normalization y = xhat * gain + shift, xhat = (hpre - mean) * rstd, the backward through it is
    dxhat = dy * gain,  dhpre = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
with the means over the batch (batch norm) or over the hidden units (layer norm).
Fewer elementwise passes where the hidden layer is widest (profiled with torch.profiler; bench/precision.py):
  - tanh's derivative comes from s = sigmoid(2y) as 1 - tanh^2 = 4 s (1 - s): one sigmoid_backward pass, and
    the factor 4 (a power of two: exact) rides in the alphas of the products and updates that follow;
  - with one replica, layer and batch norm run torch's fused kernels (native_layer_norm / native_batch_norm
    and their backwards: one pass each way, batch statistics and the gain and shift gradients included),
    with 2 * gain and 2 * shift so the norm writes 2y for the sigmoid directly. K replicas use the formulas
    above (one gain per replica), in fp32.

Layer norm with one replica on the CPU goes further where fused.py can build fused_norm.c: the norm, the
sigmoid and h = 2s - 1 are one C pass over the rows (reading bf16 hpre directly, writing bf16 h), and the
backward's sigmoid_backward, norm backward, gain and shift updates and dhpre one more; torch's kernels above
otherwise (MAKEMORE_FUSED=0, no C compiler, other norms, replicas, CUDA), with the same results to float rounding.

precision="bf16" (train.precision): the six products read bfloat16 copies of the operands (on CPUs with bf16
instructions these run faster than fp32's: bench/precision.py) and accumulate in fp32 inside; the
weights stay fp32 masters (one bf16 copy of W1a and W2a, adjacent in the flat buffer, is made before each
step), the two weight-gradient products' bf16 results are converted and added into them in one call each
(torch's mixed-type kernels are slower than a conversion and an fp32 kernel), and every
elementwise pass (norm, sigmoid, softmax, the loss) runs in fp32 on fp32 buffers, because this torch's
elementwise kernels are no faster on bf16 than on fp32.
Evaluation is always fp32 (the module's forward).

Weight decay (on C, W1, W2, D) is SGD's p -= lr * (g + wd * p), applied after the gradients that read those
weights were computed: C is scaled by c = 1 - lr * wd, and W1a and W2a get c as the beta of their update
products (W = c W + alpha a^T d: no pass of its own). Biases must not decay, so their rows are divided by c
first: c (b / c) + g = b + g (kept aside and added back instead where c is near 0).

With a `grad` buffer (shaped like the model's flat buffer) the step writes the gradients there instead of
updating, for another optimizer (update.FlatUpdate) to apply: the same products with alpha = 1/N, the
embedding rows accumulated into the zeroed gradient of C.
"""

from __future__ import annotations

import torch

from ...device import PRECISIONS
from ...models.layers import BN_EPS, BN_MOMENTUM
from .fused import library as fused_library
from .layout import FlatLayout

aten = torch.ops.aten


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
        dt = PRECISIONS[precision]  # the products' operand type
        self.low = dt != torch.float32
        one_replica = layout.replicas == 1
        self.sq = (lambda t: t[0]) if one_replica else (lambda t: t)  # drop the K dimension when K = 1
        self._mm, self._addmm = (torch.mm, torch.addmm) if one_replica else (torch.bmm, torch.baddbmm)
        self._addmm_ = torch.Tensor.addmm_ if one_replica else torch.Tensor.baddbmm_
        self.norm = layout.norm
        # torch's fused norm kernels take one gain for all rows: one replica (batch norm also needs N > 1)
        self.native = layout.norm != "none" and one_replica and (layout.norm == "layer" or batch_size > 1)
        W2p = self._weights(layout, dt)
        self._activations(layout, dt, W2p)
        self._norm_and_gradients(layout)
        self.fused = False
        if fused:
            self._use_fused(layout, layout.device)

    def _weights(self, layout: FlatLayout, dt: torch.dtype) -> torch.Tensor:
        """The masters and what the products read of them (bf16 copies with train.precision=bf16); returns W2a as
        the products read it."""
        K, V, E, H, BE = layout.replicas, layout.vocab_size, layout.emb, layout.hidden, layout.block_size * layout.emb
        sq, st = self.sq, layout.storage
        self.C2 = st["C"].view(K * V, E)  # rows of all replicas; batch indices carry a k*V offset
        self.W1a, self.W2a = sq(st["W1a"]), sq(st["W2a"])  # the fp32 masters
        # W1a and W2a are adjacent in the flat buffer (layout.py): bf16 copies and conversions of both are one call
        # over that range instead of two (fewer calls per step)
        lo, hi = st["W1a"].storage_offset(), st["W2a"].storage_offset() + st["W2a"].numel()
        self.lo, self.hi = lo, hi
        W1p, W2p = st["W1a"], st["W2a"]  # what the products read: the masters, or bf16 copies made each step
        if self.low:
            self.W_range = layout.flat[lo:hi]
            self.Wp_range = torch.empty_like(self.W_range, dtype=dt)
            W1p, W2p = self._mirror(self.Wp_range, st["W1a"], st["W2a"], lo)
            # the weight-gradient products' bf16 results, laid out as W1a and W2a: one add puts both into the masters
            self.gWp_range = torch.empty_like(self.Wp_range)
            if self.grad is None:  # ... converted (with a grad buffer they are converted into it)
                self.gW32_range = torch.empty_like(self.W_range)
            self.gW1p, self.gW2p = (sq(t) for t in self._mirror(self.gWp_range, st["W1a"], st["W2a"], lo))
        self.W1p, self.W2p = sq(W1p), sq(W2p)
        self.W1T, self.W2T = sq(W1p[:, :BE].transpose(1, 2)), sq(W2p[:, :H].transpose(1, 2))
        # the bias rows (b1: W1a's last; b2: W2a's row H), kept across a decaying update (see the docstring)
        self.b1, self.b2 = self.W1a[..., BE, :], self.W2a[..., H, :]
        self.b1_keep, self.b2_keep = torch.empty_like(self.b1), torch.empty_like(self.b2)
        return W2p

    def _activations(self, layout: FlatLayout, dt: torch.dtype, W2p: torch.Tensor) -> None:
        """Every intermediate of the step, preallocated for the batch shape."""
        K, N, E, H, B = layout.replicas, self.N, layout.emb, layout.hidden, layout.block_size
        BE, Vp, sq, dev = B * E, layout.storage["W2a"].shape[2], self.sq, layout.device

        def buf(*shape, dtype=torch.float32, fill=None):
            if fill is None:
                return torch.empty(*shape, dtype=dtype, device=dev)
            return torch.full(shape, fill, dtype=dtype, device=dev)

        self.rows = buf(K * N * B, E)  # looked-up embedding rows
        emb_a = buf(K, N, BE + 1, dtype=dt, fill=1.0)  # [emb | 1]
        self.emb_a, self.emb = sq(emb_a), sq(emb_a[:, :, :BE])
        self.rows3 = sq(self.rows.view(K, N, BE))
        self.emb_aT = sq(emb_a.transpose(1, 2))
        self.hpre = sq(buf(K, N, H, dtype=dt))  # the first product's result
        self.hpre32 = sq(buf(K, N, H)) if self.low else self.hpre  # ... in fp32, for the elementwise passes
        self.s = sq(buf(K, N, H))  # s = sigmoid(2y), y the tanh's input: h = tanh(y) = 2s - 1
        h_a = buf(K, N, H + 1 + (BE if layout.direct else 0), dtype=dt, fill=1.0)  # [h | 1 (| emb: direct)]
        self.h_a, self.h, self.h_aT = sq(h_a), sq(h_a[:, :, :H]), sq(h_a.transpose(1, 2))
        if layout.direct:  # the direct connections D: the output layer's rows after b2 (layout.py)
            self.h_emb = sq(h_a[:, :, H + 1 :])
            self.DT = sq(W2p[:, H + 1 :].transpose(1, 2))
        self.logits = sq(buf(K, N, Vp, dtype=dt))
        self.dlogits = torch.empty_like(self.logits) if self.low else None  # softmax - onehot, as bf16 products read it
        self.dh = sq(buf(K, N, H, dtype=dt))
        self.dy = sq(buf(K, N, H)) if self.low else self.dh  # dL/dy / 4, fp32
        self.dhpre = sq(buf(K, N, H, dtype=dt)) if self.low else None  # dL/dhpre / 4 as the products read it
        self.demb = sq(buf(K, N, BE, dtype=dt))
        self.demb32 = sq(buf(K, N, BE)) if self.low else self.demb  # for the fp32 embedding table
        self.demb_rows = self.demb32.view(K * N * B, E)
        self.minus_one = sq(buf(K, N, 1, fill=-1.0))
        self.neg_one = -torch.ones((), device=dev)

    def _norm_and_gradients(self, layout: FlatLayout) -> None:
        """The norm's doubled gain and shift, and views of the gradient buffer laid out as the parameters."""
        K, V, E, H, st, grad = layout.replicas, layout.vocab_size, layout.emb, layout.hidden, layout.storage, self.grad
        if layout.norm != "none":
            # 2 * gain, 2 * shift (the norm writes 2y), from gain and shift (adjacent in the flat buffer) in one call
            g0 = st["gain"].storage_offset()
            self.gain_shift = layout.flat[g0 : g0 + 2 * K * H].view(2, K, H)
            self.gain_shift2 = torch.empty(2, K, H, device=layout.device)
            self.gain2, self.shift2 = self.gain_shift2.unbind(0)
        if grad is not None:  # views of the gradient buffer laid out as the parameters (same offsets)
            g = {n: grad.as_strided(t.shape, t.stride(), t.storage_offset()) for n, t in st.items()}
            self.gC2, self.gW1a, self.gW2a = g["C"].view(K * V, E), self.sq(g["W1a"]), self.sq(g["W2a"])
            self.gnorm = (g["gain"], g["shift"]) if layout.norm != "none" else None
            self.gW_range = grad[self.lo : self.hi]

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
        m = self.layout
        step = -lr / self.N if self.grad is None else 1.0 / self.N  # update scale, or gradient scale
        step4 = 4.0 * step  # the hidden layer's gradients are kept / 4 (see the module docstring)
        if self.grad is not None:
            self.grad.zero_()  # C's rows (and the norm's) accumulate; the products overwrite
        if self.low:
            self.Wp_range.copy_(self.W_range)
        # forward
        torch.index_select(self.C2, 0, ix, out=self.rows)
        self.emb.copy_(self.rows3)
        if m.direct:
            self.h_emb.copy_(self.rows3)
        if self.norm == "none":  # the product computes 2 hpre = 2y directly
            self._addmm(self.hpre, self.emb_a, self.W1p, beta=0, alpha=2.0, out=self.hpre)
        else:
            self._mm(self.emb_a, self.W1p, out=self.hpre)
        s = self._hidden_forward()
        self._mm(self.h_a, self.W2p, out=self.logits)
        lsm = torch.log_softmax(self.logits, dim=-1, dtype=torch.float32 if self.low else None)
        torch.gather(lsm, -1, Y, out=picked)
        # backward: dlogits = softmax - onehot (the 1/N goes into the updates' alpha)
        dlogits = lsm.exp_()
        dlogits.scatter_add_(-1, Y, self.minus_one)
        dl = self.dlogits.copy_(dlogits) if self.low else dlogits
        self._mm(dl, self.W2T, out=self.dh)
        dhpre = self._hidden_backward(s, step4)
        self._addmm(self.demb, dhpre, self.W1T, beta=0, alpha=step4, out=self.demb)  # -lr * demb / N
        if m.direct:  # emb also reaches the logits through D
            self._addmm_(self.demb, dl, self.DT, alpha=step)
        if self.low:
            self.demb32.copy_(self.demb)
        if self.grad is None and not (self.low or self.wd):  # the lecture's case inline: at batch 32 a call's
            self._addmm_(self.W2a, self.h_aT, dl, alpha=step)  # Python overhead is measurable (bench/speed.py)
            self._addmm_(self.W1a, self.emb_aT, dhpre, alpha=step4)
            self.C2.index_add_(0, ix, self.demb_rows)
        else:
            self._apply(ix, lr, dl, dhpre, step, step4)

    def _hidden_forward(self) -> torch.Tensor:
        """hpre -> s = sigmoid(2y) and h = 2s - 1 = tanh(y), through the norm if any; returns s."""
        if self.fused:
            self._fused_forward(*self._fused_forward_args)
            return self.s
        if self.low:
            self.hpre32.copy_(self.hpre)
        if self.norm == "none":
            s = torch.sigmoid(self.hpre32, out=self.s)
        else:
            s = self._norm_forward(self.hpre32).sigmoid_()
        torch.add(self.neg_one, s, alpha=2.0, out=self.h)  # tanh(y) = 2 sigmoid(2y) - 1
        return s

    def _hidden_backward(self, s: torch.Tensor, step4: float) -> torch.Tensor:
        """dh -> dL/dhpre / 4 as the products read it (bf16 or fp32); the norm's gain and shift get step4 times
        their gradients."""
        if self.fused:
            self._fused_backward(*self._fused_backward_args[0], step4, *self._fused_backward_args[1])
            return self.dhpre if self.low else self.dh
        if self.low:  # a conversion, then the fp32 kernel: faster than sigmoid_backward on mixed types
            self.dy.copy_(self.dh)
        dy = aten.sigmoid_backward.grad_input(self.dy, s, grad_input=self.dy)  # dL/dy / 4
        dx = dy if self.norm == "none" else self._norm_backward(dy, step4)  # dL/dhpre / 4, fp32
        return self.dhpre.copy_(dx) if self.low else dx

    def _use_fused(self, layout: FlatLayout, dev) -> None:
        """Layer norm and tanh in one C pass each way (fused.py), where it is built: one replica on the CPU."""
        lib = fused_library() if self.native and self.norm == "layer" and torch.device(dev).type == "cpu" else None
        self.fused = lib is not None
        if not self.fused:
            return
        N, H, low = self.N, layout.hidden, int(self.low)
        gain = layout.params["gain"]
        gain_t, shift_t = (gain, layout.params["shift"]) if self.grad is None else self.gnorm
        self.mean, self.rstd = torch.empty(N, device=dev), torch.empty(N, device=dev)
        dx = self.dhpre if self.low else self.dh  # fp32: dx overwrites dh row by row (the kernel reads a row first)
        # raw addresses for the C calls: this step holds every tensor behind them (its buffers, views of the model's
        # flat buffer and of grad), and the model changes in place (load_state_dict copies), so they stay valid
        p = [self.hpre, self.gain_shift, self.s, self.h, self.mean, self.rstd, self.dh, gain, gain_t, shift_t, dx]
        hpre, gain_shift, s, h, mean, rstd, dh, gain, gain_t, shift_t, dx = (t.data_ptr() for t in p)
        self._fused_forward = lib.fused_norm_tanh_forward
        self._fused_forward_args = (hpre, low, gain_shift, BN_EPS, s, h, low, self.h.stride(0), mean, rstd, N, H)
        self._fused_backward = lib.fused_norm_tanh_backward
        self._fused_backward_args = (dh, low, s, hpre, low, mean, rstd, gain), (gain_t, shift_t, dx, low, N, H)

    def _apply(self, ix: torch.Tensor, lr: float, dl: torch.Tensor, dhpre: torch.Tensor, step: float, step4: float):
        """The weight gradients into the gradient buffer, or the update with weight decay or bf16 products."""
        if self.grad is not None:
            if self.low:  # the bf16 results, then one conversion into the fp32 gradient buffer
                self._weight_grads(self.gW2p, self.gW1p, dl, dhpre, step, step4)
                self.gW_range.copy_(self.gWp_range)
            else:
                self._weight_grads(self.gW2a, self.gW1a, dl, dhpre, step, step4)
            if self.norm == "batch":  # b1's gradient is exactly 0 before batch norm (float noise here): hold it
                self.gW1a[..., -1, :].zero_()
            self.gC2.index_add_(0, ix, self.demb_rows)
            return
        # update: the gradients that read W1 and W2 are done, so decay and step may change them now
        c = 1.0 - lr * self.wd
        keep = self.wd and abs(c) < 1e-3  # lr * wd near 1: b / c below would lose b, so b is kept aside
        if self.wd:
            self.C2.mul_(c)
            if keep:
                self.b1_keep.copy_(self.b1)
                self.b2_keep.copy_(self.b2)
            else:  # W = c W + g decays the bias rows too; c (b / c) + g = b + g undoes it
                self.b1.mul_(1.0 / c)
                self.b2.mul_(1.0 / c)
        if self.low:  # the bf16 results, converted, then one add of both into the masters: W = c W + g
            self._weight_grads(self.gW2p, self.gW1p, dl, dhpre, step, step4)
            self.gW32_range.copy_(self.gWp_range)
            torch.add(self.gW32_range, self.W_range, alpha=c, out=self.W_range)
        else:  # fp32 fuses the update into the products
            self._addmm_(self.W2a, self.h_aT, dl, beta=c, alpha=step)
            self._addmm_(self.W1a, self.emb_aT, dhpre, beta=c, alpha=step4)
        if keep:
            self.b1.add_(self.b1_keep, alpha=1.0 - c)
            self.b2.add_(self.b2_keep, alpha=1.0 - c)
        self.C2.index_add_(0, ix, self.demb_rows)

    def _weight_grads(self, gW2, gW1, dl: torch.Tensor, dhpre: torch.Tensor, step: float, step4: float):
        """gW2 = step [h | 1]^T dl and gW1 = step4 [emb | 1]^T dhpre, written into the given buffers."""
        self._addmm(gW2, self.h_aT, dl, beta=0, alpha=step, out=gW2)
        self._addmm(gW1, self.emb_aT, dhpre, beta=0, alpha=step4, out=gW1)

    @staticmethod
    def _mirror(buffer: torch.Tensor, W1a: torch.Tensor, W2a: torch.Tensor, lo: int):
        """Views of `buffer` (a copy of the flat range starting at offset lo) laid out as W1a and W2a."""
        return (buffer[t.storage_offset() - lo :][: t.numel()].view(t.shape) for t in (W1a, W2a))

    # -- normalization of the hidden pre-activations (batch or layer norm) --------------------------

    def _norm_forward(self, hpre: torch.Tensor) -> torch.Tensor:
        """2y = 2 (norm(hpre) * gain + shift), the sigmoid's input; batch norm also updates the running
        statistics. The fused kernels' out= forms copy (autogenerated): their results are taken as they come."""
        m = self.layout
        K, H = m.replicas, m.hidden
        torch.mul(self.gain_shift, 2.0, out=self.gain_shift2)
        if self.native:
            g2, s2 = self.gain2.view(H), self.shift2.view(H)
            if self.norm == "layer":
                y2, self.mean, self.rstd = torch.native_layer_norm(hpre, [H], g2, s2, BN_EPS)
            else:  # running_var gets the unbiased batch variance, as the formulas below
                rm, rv = m.buffers["running_mean"].view(H), m.buffers["running_var"].view(H)
                y2, self.mean, self.rstd = torch.native_batch_norm(hpre, g2, s2, rm, rv, True, BN_MOMENTUM, BN_EPS)
            return y2
        dim = -2 if self.norm == "batch" else -1  # batch: over the examples; layer: over the hidden units
        mean = hpre.mean(dim, keepdim=True)
        xc = hpre - mean
        var = (xc * xc).mean(dim, keepdim=True)
        self.rstd, self.dim = torch.rsqrt(var + BN_EPS), dim
        self.xhat = xc.mul_(self.rstd)
        if self.norm == "batch":
            N = self.N
            m.buffers["running_mean"].lerp_(mean.view(K, H), BN_MOMENTUM)
            m.buffers["running_var"].lerp_(var.view(K, H) * (N / max(N - 1, 1)), BN_MOMENTUM)
        return torch.addcmul(self.sq(self.shift2.unsqueeze(1)), self.xhat, self.sq(self.gain2.unsqueeze(1)), out=self.s)

    def _norm_backward(self, dy: torch.Tensor, alpha: float) -> torch.Tensor:
        """dy (through the norm) -> dhpre; gain and shift get alpha * their gradients."""
        m = self.layout
        K, H = m.replicas, m.hidden
        gain, shift = m.params["gain"], m.params["shift"]
        if self.native:
            mask = [True, True, True]
            if self.norm == "layer":
                dx, dgain, dshift = aten.native_layer_norm_backward(
                    dy, self.hpre32, [H], self.mean, self.rstd, gain.view(H), shift.view(H), mask
                )
            else:
                rm, rv = m.buffers["running_mean"].view(H), m.buffers["running_var"].view(H)
                dx, dgain, dshift = aten.native_batch_norm_backward(
                    dy, self.hpre32, gain.view(H), rm, rv, self.mean, self.rstd, True, BN_EPS, mask
                )
        else:
            xhat, dim = self.xhat, self.dim
            dxhat = dy * self.sq(gain.unsqueeze(1))
            dx = self.rstd * (dxhat - dxhat.mean(dim, keepdim=True) - xhat * (dxhat * xhat).mean(dim, keepdim=True))
            dgain, dshift = (dy * xhat).view(K, -1, H).sum(1), dy.view(K, -1, H).sum(1)
        gain_t, shift_t = (gain, shift) if self.grad is None else self.gnorm
        gain_t.add_(dgain.view(K, H), alpha=alpha)
        shift_t.add_(dshift.view(K, H), alpha=alpha)
        return dx
