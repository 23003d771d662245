"""The fast engine's optimizer: one update of the flat parameter buffer from the flat gradient buffer, in a closed
form of a few whole-buffer operations (the same arithmetic as torch.optim's single-tensor SGD and AdamW, in the same
order). The lecture's plain SGD does not come here: the step fuses it into its gradient products."""

from __future__ import annotations

import math

import torch

from ..optim import set_lr
from .fused import library as fused_library


class FlatUpdate:
    """SGD (momentum, Nesterov, coupled weight decay) or AdamW (decoupled weight decay) on `flat` from `grad`;
    `decay` is 1 where weight decay applies, 0 elsewhere.

    impl "closed" (default) or, for AdamW, "fused" / "foreach": torch.optim.AdamW's kernels on the buffer, kept to
    compare against (bench/speed.py --optimizers times the three)."""

    IMPLS = ("closed", "fused", "foreach")

    def __init__(self, conf: dict, flat: torch.Tensor, grad: torch.Tensor, decay: torch.Tensor, impl: str = "closed"):
        self.conf, self.flat, self.grad, self.impl = conf, flat, grad, impl
        self.wd = decay * conf["weight_decay"]  # per element
        self.has_wd = conf["weight_decay"] > 0
        self.t = 0
        self.buf1 = torch.zeros_like(flat)  # SGD: momentum buffer; AdamW: first moment
        self.buf2 = torch.zeros_like(flat) if conf["name"] == "adamw" else None  # AdamW: second moment
        self.tmp = torch.empty_like(flat)
        self.opt = None
        # the closed form in one C pass (fused_norm.c's fused_adamw) on the CPU where it is built
        on_cpu = flat.device.type == "cpu" and flat.dtype == torch.float32 and flat.is_contiguous()
        self.lib = fused_library() if conf["name"] == "adamw" and impl == "closed" and on_cpu else None
        if conf["name"] == "adamw" and impl != "closed":
            flat.grad = grad
            b1, b2 = conf["betas"]
            self.opt = torch.optim.AdamW(
                [flat], lr=1e-3, betas=(b1, b2), eps=conf["eps"], weight_decay=0.0, **{impl: True}
            )
        elif impl != "closed":
            raise ValueError(f"FlatUpdate impl {impl!r} is for adamw only")

    def __call__(self, lr: float) -> None:
        p, g = self.flat, self.grad
        self.t += 1
        if self.conf["name"] == "sgd":
            if self.has_wd:
                g.addcmul_(self.wd, p)  # coupled: g + wd * p
            mom = self.conf["momentum"]
            self.buf1.mul_(mom).add_(g)  # torch starts the buffer at g: 0 * mom + g is the same
            if self.conf["nesterov"]:
                p.add_(torch.add(g, self.buf1, alpha=mom, out=self.tmp), alpha=-lr)
            else:
                p.add_(self.buf1, alpha=-lr)
            return
        b1, b2 = self.conf["betas"]
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
        if self.lib is not None:
            wd = self.wd.data_ptr() if self.has_wd else None
            self.lib.fused_adamw(p.data_ptr(), g.data_ptr(), self.buf1.data_ptr(), self.buf2.data_ptr(), wd,
                                 p.numel(), lr, b1, b2, bc1, math.sqrt(bc2), self.conf["eps"])  # fmt: skip
            return
        if self.has_wd:
            p.addcmul_(self.wd, p, value=-lr)  # decoupled: p *= 1 - lr * wd, where decayed
        if self.opt is not None:
            set_lr(self.opt, lr)
            self.opt.step()
            return
        self.buf1.lerp_(g, 1 - b1)
        self.buf2.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = torch.sqrt(self.buf2, out=self.tmp).div_(math.sqrt(bc2)).add_(self.conf["eps"])
        p.addcdiv_(self.buf1, denom, value=-lr / bc1)

    def state(self) -> dict:
        if self.opt is not None:
            self._sync_from_opt()
        s = {"t": self.t, "buf1": self.buf1.clone()}
        if self.buf2 is not None:
            s["buf2"] = self.buf2.clone()
        return s

    def load_state(self, s: dict) -> None:
        self.t = s["t"]
        self.buf1.copy_(s["buf1"])
        if self.buf2 is not None:
            self.buf2.copy_(s["buf2"])
        if self.opt is not None and self.t:
            self.opt.state[self.flat] = {
                "step": torch.tensor(float(self.t)),
                "exp_avg": self.buf1.clone(),
                "exp_avg_sq": self.buf2.clone(),
            }

    def _sync_from_opt(self) -> None:
        st = self.opt.state.get(self.flat)
        if st:
            self.buf1.copy_(st["exp_avg"])
            self.buf2.copy_(st["exp_avg_sq"])
