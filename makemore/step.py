"""The fast SGD step: forward, hand-derived backward and update of the MLP, fused and allocation-free.

At batch 32 a step is dominated by per-operation overhead (a few microseconds per torch call), not by
arithmetic, so this step is written to issue as few operations as possible (profiled with
torch.profiler; see bench/):
  - gradients are the closed forms of makemore part 4 instead of autograd's graph;
  - biases ride along as the last row of their weight matrix against a ones column of the input, and
    weight updates are fused into the gradient products: `W.addmm_(a^T, d, alpha=-lr/N)` computes
    W -= lr * a^T d / N in one call; the embedding rows get one accumulating `index_put_`;
  - tanh(x) is computed as 2*sigmoid(2x) - 1: this torch build's CPU tanh is ~6x slower than sigmoid;
  - the output layer is padded to a multiple of 16 classes (model.py), which MKL multiplies faster;
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
Weight decay (on C, W1, W2) is applied as p *= 1 - lr * wd after the gradients that read those weights
were computed and before the gradient update: exactly SGD's p -= lr * (g + wd * p).

With a `grad` buffer (shaped like the model's flat buffer) the step writes the gradients there instead of
updating, for another optimizer (optim.FlatUpdate) to apply: the same products with alpha = 1/N, the
embedding rows accumulated into the zeroed gradient of C.
"""

from __future__ import annotations

import torch

from .model import BN_EPS, BN_MOMENTUM, MLP


class FastStep:
    """One training step of `model` for batches of `batch_size` examples per replica."""

    def __init__(self, model: MLP, batch_size: int, weight_decay: float = 0.0, grad: torch.Tensor | None = None):
        self.model, self.N, self.wd, self.grad = model, batch_size, weight_decay, grad
        if grad is not None and weight_decay:
            raise ValueError("with a grad buffer the optimizer applies the weight decay")
        K, N, V, E, H = model.replicas, batch_size, model.vocab_size, model.emb, model.hidden
        Vp = model.storage["W2a"].shape[2]  # the output layer's padded width (see model.py)
        B, BE = model.block_size, model.block_size * model.emb
        dev = model.device
        one_replica = K == 1
        sq = (lambda t: t[0]) if one_replica else (lambda t: t)  # drop the K dimension when K = 1
        self._mm, self._addmm = (torch.mm, torch.addmm) if one_replica else (torch.bmm, torch.baddbmm)
        self._addmm_ = torch.Tensor.addmm_ if one_replica else torch.Tensor.baddbmm_
        st = model.storage
        self.C2 = st["C"].view(K * V, E)  # rows of all replicas; batch indices carry a k*V offset
        self.W1a, self.W2a = sq(st["W1a"]), sq(st["W2a"])
        self.W1T, self.W2T = sq(st["W1a"][:, :BE].transpose(1, 2)), sq(st["W2a"][:, :H].transpose(1, 2))
        self.decayed = [model.params[n] for n in MLP.DECAYED if n in model.params]
        self.rows = torch.empty(K * N * B, E, device=dev)  # looked-up embedding rows
        emb_a = torch.ones(K, N, BE + 1, device=dev)  # [emb | 1]
        self.emb_a, self.emb = sq(emb_a), sq(emb_a[:, :, :BE])
        self.rows3 = sq(self.rows.view(K, N, BE))
        self.emb_aT = sq(emb_a.transpose(1, 2))
        self.hpre = sq(torch.empty(K, N, H, device=dev))
        self.sig = sq(torch.empty(K, N, H, device=dev))
        h_a = torch.ones(K, N, H + 1 + (BE if model.direct else 0), device=dev)  # [h | 1 (| emb: direct)]
        self.h_a, self.h, self.h_aT = sq(h_a), sq(h_a[:, :, :H]), sq(h_a.transpose(1, 2))
        if model.direct:  # the direct connections D: the output layer's rows after b2 (model.py)
            self.h_emb = sq(h_a[:, :, H + 1 :])
            self.DT = sq(st["W2a"][:, H + 1 :].transpose(1, 2))
        self.logits = sq(torch.empty(K, N, Vp, device=dev))
        self.dh = sq(torch.empty(K, N, H, device=dev))
        self.tanh_grad = sq(torch.empty(K, N, H, device=dev))
        self.demb = sq(torch.empty(K, N, BE, device=dev))
        self.demb_rows = self.demb.view(K * N * B, E)
        self.minus_one = sq(torch.full((K, N, 1), -1.0, device=dev))
        self.one, self.neg_one = torch.ones((), device=dev), -torch.ones((), device=dev)
        self.sq = sq
        if grad is not None:  # views of the gradient buffer laid out as the parameters (same offsets)
            g = {n: grad.as_strided(t.shape, t.stride(), t.storage_offset()) for n, t in st.items()}
            self.gC2, self.gW1a, self.gW2a = g["C"].view(K * V, E), sq(g["W1a"]), sq(g["W2a"])
            self.gnorm = (g["gain"], g["shift"]) if model.norm != "none" else None

    def batches(
        self, X: torch.Tensor, Y: torch.Tensor, ix: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-step arguments for S steps from batch indices ix (S, K, N) into the training set:
        the rows of C to look up (offset by k*V for replica k) and the targets as (K, N, 1)."""
        S, K, N = ix.shape
        offset = (torch.arange(K, device=ix.device) * self.model.vocab_size).view(1, K, 1, 1)
        rows = (X[ix] + offset).view(S, -1)
        targets = Y[ix].view(S, K, N, 1)
        if K == 1:
            targets = targets.view(S, N, 1)
        return rows.unbind(0), targets.unbind(0)

    def __call__(self, ix: torch.Tensor, Y: torch.Tensor, lr: float, picked: torch.Tensor) -> None:
        """ix: (K*N*block_size,) rows of C; Y: (K, N, 1) targets (K dim dropped when K = 1);
        picked: a slot shaped like Y that receives log p(target) of each example (the loss, negated)."""
        m = self.model
        step = -lr / self.N if self.grad is None else 1.0 / self.N  # update scale, or gradient scale
        if self.grad is not None:
            self.grad.zero_()  # C's rows (and the norm's) accumulate; the products overwrite
        # forward
        torch.index_select(self.C2, 0, ix, out=self.rows)
        self.emb.copy_(self.rows3)
        if m.direct:
            self.h_emb.copy_(self.rows3)
        if m.norm == "none":
            self._addmm(self.hpre, self.emb_a, self.W1a, beta=0, alpha=2.0, out=self.hpre)  # 2 * hpre
            torch.sigmoid(self.hpre, out=self.sig)
            torch.add(self.neg_one, self.sig, alpha=2.0, out=self.h)  # tanh(x) = 2 sigmoid(2x) - 1
        else:
            self._mm(self.emb_a, self.W1a, out=self.hpre)
            norm_cache = self._norm_forward()
        self._mm(self.h_a, self.W2a, out=self.logits)
        lsm = torch.log_softmax(self.logits, dim=-1)
        torch.gather(lsm, -1, Y, out=picked)
        # backward: dlogits = softmax - onehot (the 1/N goes into the updates' alpha)
        dlogits = lsm.exp_()
        dlogits.scatter_add_(-1, Y, self.minus_one)
        self._mm(dlogits, self.W2T, out=self.dh)
        torch.addcmul(self.one, self.h, self.h, value=-1.0, out=self.tanh_grad)
        dhpre = self.dh.mul_(self.tanh_grad)
        if m.norm != "none":
            dhpre = self._norm_backward(dhpre, norm_cache, step)
        self._addmm(self.demb, dhpre, self.W1T, beta=0, alpha=step, out=self.demb)  # -lr * demb / N
        if m.direct:  # emb also reaches the logits through D
            self._addmm_(self.demb, dlogits, self.DT, alpha=step)
        if self.grad is not None:
            self._addmm(self.gW2a, self.h_aT, dlogits, beta=0, alpha=step, out=self.gW2a)
            self._addmm(self.gW1a, self.emb_aT, dhpre, beta=0, alpha=step, out=self.gW1a)
            if m.norm == "batch":  # b1's gradient is exactly 0 before batch norm (float noise here): hold it
                self.gW1a[..., -1, :].zero_()
            self.gC2.index_put_((ix,), self.demb_rows, accumulate=True)
            return
        # update: the gradients that read W1 and W2 are done, so decay and step may change them now
        if self.wd:
            for p in self.decayed:
                p.mul_(1.0 - lr * self.wd)
        self._addmm_(self.W2a, self.h_aT, dlogits, alpha=step)
        self._addmm_(self.W1a, self.emb_aT, dhpre, alpha=step)
        self.C2.index_put_((ix,), self.demb_rows, accumulate=True)

    # -- normalization of the hidden pre-activations (batch or layer norm) --------------------------

    def _norm_forward(self):
        m = self.model
        K, H = m.replicas, m.hidden
        dim = -2 if m.norm == "batch" else -1  # batch: over the examples; layer: over the hidden units
        mean = self.hpre.mean(dim, keepdim=True)
        xc = self.hpre - mean
        var = (xc * xc).mean(dim, keepdim=True)
        rstd = torch.rsqrt(var + BN_EPS)
        xhat = xc * rstd
        gain, shift = self.sq(m.params["gain"].unsqueeze(1)), self.sq(m.params["shift"].unsqueeze(1))
        y = torch.addcmul(shift, xhat, gain).mul_(2)
        torch.add(self.neg_one, torch.sigmoid(y), alpha=2.0, out=self.h)  # tanh(y), as above
        if m.norm == "batch":
            N = self.N
            m.buffers["running_mean"].lerp_(mean.view(K, H), BN_MOMENTUM)
            m.buffers["running_var"].lerp_(var.view(K, H) * (N / max(N - 1, 1)), BN_MOMENTUM)
        return xhat, rstd, dim, gain

    def _norm_backward(self, dy, cache, step):
        xhat, rstd, dim, gain = cache
        m = self.model
        K, H = m.replicas, m.hidden
        dxhat = dy * gain
        dhpre = rstd * (dxhat - dxhat.mean(dim, keepdim=True) - xhat * (dxhat * xhat).mean(dim, keepdim=True))
        gain, shift = (m.params["gain"], m.params["shift"]) if self.grad is None else self.gnorm
        gain.add_((dy * xhat).sum(-2).view(K, H), alpha=step)
        shift.add_(dy.sum(-2).view(K, H), alpha=step)
        return dhpre
