"""The fast step's one flat buffer, laid out for its products, holding the MLP module's parameters.

    C       (K, V, E)                the embedding table
    W1a     (K, BE + 1, H)           [W1; b1]: the bias as the last row, against a ones column of the input
    W2a     (K, H + 1 (+ BE), Vp)    [Wout; bout (; D)]: the output layer (and the direct connections)
    gain    (K, H), shift (K, H)     the norm's parameters, adjacent (one call scales both)

The output layer is padded to Vp, a multiple of 16 classes: MKL's small products run faster at width 32 than at
27 (bench/speed.py). Padded classes have zero weights and a PAD_LOGIT bias, so their softmax probability is
exactly 0, their gradient exactly 0, and they never change. W1a and W2a are adjacent, so a bf16 copy of both is
one call.

`attach` copies the module's parameters into the buffer and points each parameter at its view there: the module
(its forward, evaluation, sampling, checkpoints) and the step then share the same numbers, with no second
model class.
"""

from __future__ import annotations

import math

import torch

from ...models.mlp import MLP

PAD_LOGIT = -1e9  # bias of the padding classes (finite: 0 * -inf would be NaN)
DECAYED = ("C", "W1", "Wout", "D")  # weight decay applies to these, not to biases or norm parameters


class FlatLayout:
    def __init__(self, model: MLP):
        self.model = model
        self.replicas, self.vocab_size, self.block_size = model.replicas, model.vocab_size, model.block_size
        self.emb, self.hidden, self.norm, self.direct = model.emb, model.hidden, model.norm, model.direct
        K, V, E, H, BE = self.replicas, self.vocab_size, self.emb, self.hidden, self.block_size * self.emb
        Vp = -(-V // 16) * 16
        shapes = {"C": (K, V, E), "W1a": (K, BE + 1, H), "W2a": (K, H + 1 + (BE if self.direct else 0), Vp)}
        if self.norm != "none":
            shapes.update(gain=(K, H), shift=(K, H))
        self.flat = torch.zeros(sum(math.prod(s) for s in shapes.values()), device=model.device)
        self.storage: dict[str, torch.Tensor] = {}
        offset = 0
        for name, shape in shapes.items():
            n = math.prod(shape)
            self.storage[name] = self.flat[offset : offset + n].view(shape)
            offset += n
        W1a, W2a = self.storage["W1a"], self.storage["W2a"]
        W2a[:, H, V:] = PAD_LOGIT
        # the module's parameter name -> its view in the buffer
        self.views = {"C": self.storage["C"], "W1": W1a[:, :BE], "b1": W1a[:, BE], "Wout": W2a[:, :H, :V]}
        self.views["bout"] = W2a[:, H, :V]
        if self.direct:
            self.views["D"] = W2a[:, H + 1 :, :V]
        if self.norm != "none":
            self.views.update(gain1=self.storage["gain"], shift1=self.storage["shift"])
        # what the step updates of the norm in place: its parameters and batch norm's running statistics
        self.params = {"gain": self.storage["gain"], "shift": self.storage["shift"]} if self.norm != "none" else {}
        self.buffers = {}
        if self.norm == "batch":
            self.buffers = {"running_mean": model.running_mean1, "running_var": model.running_var1}
        self.attach()

    @property
    def device(self) -> torch.device:
        return self.flat.device

    @torch.no_grad()
    def attach(self) -> None:
        """Copy the module's parameters into their views and make the views the parameters."""
        for name, p in self.model.named_parameters():
            view = self.views[name]
            view.copy_(p)
            p.data = view

    def decay_mask(self) -> torch.Tensor:
        """1 where weight decay applies (C, W1, Wout, D), 0 on biases, norm parameters and the padding."""
        mask = torch.zeros_like(self.flat)
        for name in DECAYED:
            if name in self.views:
                v = self.views[name]
                mask.as_strided(v.shape, v.stride(), v.storage_offset()).fill_(1.0)
        return mask
