"""The fast step's one flat buffer, laid out for its products, holding the MLP's (or WaveNet's) parameters.

    C        (K, V, E)                   the embedding table
    W{l}a    (K, fan_in (+ 1), H)        layer l's weight, with its bias as the last row against a ones column of
                                         its input where the layer reads its input that way (mode "aug")
    Wouta    (K, H + 1 (+ BE), Vp)       [Wout; bout (; D)]: the output layer (and the direct connections)
    b{l}     (K, H)                      layer l's bias where it is added on its own (mode "sep")
    gain{l}, shift{l}  (K, H) each       layer l's norm, adjacent (one call doubles all of them)

A layer's mode: "aug" where its input can carry a ones column (the MLP: its first layer reads the whole context,
each later one the layer before, row for row), "sep" where it cannot (WaveNet merges two rows of the layer below
into one), "none" without a bias (WaveNet before a batch norm, as makemore part 5). The weights are adjacent, so a
bf16 copy of them all is one call. The output layer is padded to Vp, a multiple of 16 classes: MKL's small products
run faster at width 32 than at 27 (bench/speed.py times it). Padded classes have zero weights and a PAD_LOGIT bias,
so their softmax probability is exactly 0, their gradient exactly 0, and they never change. With one plain layer
this is the layout of checkpoint format 2's flat tensor.

`attach` copies the module's parameters into the buffer and points each parameter at its view there: the module
(its forward, evaluation, sampling, checkpoints) and the step then share the same numbers, with no second model
class.
"""

from __future__ import annotations

import math

import torch

from ...models.mlp import MLP

PAD_LOGIT = -1e9  # bias of the padding classes (finite: 0 * -inf would be NaN)


def decayed(name: str) -> bool:
    """Weight decay applies to the embeddings and weight matrices, not to biases or norm parameters."""
    return name in ("C", "Wout", "D") or (name.startswith("W") and name[1:].isdigit())


class FlatLayout:
    def __init__(self, model: MLP):
        self.model = model
        self.replicas, self.vocab_size, self.block_size = model.replicas, model.vocab_size, model.block_size
        self.emb, self.hidden, self.norm, self.direct = model.emb, model.hidden, model.norm, model.direct
        self.layers, self.merges, self.fan_ins = model.layers, model.merges, model.fan_ins()
        # the MLP's layers read whole rows of the one below (its first the whole context): a ones column fits
        self.modes = ["aug" if model.kind == "mlp" else "sep" if model.bias else "none"] * self.layers
        K, V, E, H, BE = self.replicas, self.vocab_size, self.emb, self.hidden, self.block_size * self.emb
        self.padded = -(-V // 16) * 16
        shapes = {"C": (K, V, E)}
        for i, (fan_in, mode) in enumerate(zip(self.fan_ins, self.modes), 1):
            shapes[f"W{i}a"] = (K, fan_in + (mode == "aug"), H)
        shapes["Wouta"] = (K, H + 1 + (BE if self.direct else 0), self.padded)
        shapes |= {f"b{i}": (K, H) for i, mode in enumerate(self.modes, 1) if mode == "sep"}
        if self.norm != "none":
            for i in range(1, self.layers + 1):
                shapes |= {f"gain{i}": (K, H), f"shift{i}": (K, H)}
        self.flat = torch.zeros(sum(math.prod(s) for s in shapes.values()), device=model.device)
        self.storage: dict[str, torch.Tensor] = {}
        offset = 0
        for name, shape in shapes.items():
            n = math.prod(shape)
            self.storage[name] = self.flat[offset : offset + n].view(shape)
            offset += n
        self.storage["Wouta"][:, H, V:] = PAD_LOGIT
        self.views = self._views()
        self.attach()

    def _views(self) -> dict[str, torch.Tensor]:
        """The module's parameter name -> its view in the buffer."""
        st, H, V, BE = self.storage, self.hidden, self.vocab_size, self.block_size * self.emb
        views = {"C": st["C"]}
        for i, (fan_in, mode) in enumerate(zip(self.fan_ins, self.modes), 1):
            views[f"W{i}"] = st[f"W{i}a"][:, :fan_in]
            if mode != "none":
                views[f"b{i}"] = st[f"W{i}a"][:, fan_in] if mode == "aug" else st[f"b{i}"]
            if self.norm != "none":
                views |= {f"gain{i}": st[f"gain{i}"], f"shift{i}": st[f"shift{i}"]}
        Wo = st["Wouta"]
        views |= {"Wout": Wo[:, :H, :V], "bout": Wo[:, H, :V]}
        if self.direct:
            views["D"] = Wo[:, H + 1 : H + 1 + BE, :V]
        return views

    @property
    def device(self) -> torch.device:
        return self.flat.device

    def running(self, i: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Layer i's batch-norm running statistics, the module's buffers (the step updates them in place)."""
        return self.model.running(i)

    @torch.no_grad()
    def attach(self) -> None:
        """Copy the module's parameters into their views and make the views the parameters."""
        for name, p in self.model.named_parameters():
            view = self.views[name]
            view.copy_(p)
            p.data = view

    def decay_mask(self) -> torch.Tensor:
        """1 where weight decay applies (C, the layers' W, Wout, D), 0 on biases, norm parameters and the padding."""
        mask = torch.zeros_like(self.flat)
        for name, v in self.views.items():
            if decayed(name):
                mask.as_strided(v.shape, v.stride(), v.storage_offset()).fill_(1.0)
        return mask
