"""The MLP of Bengio et al. 2003 as the lecture writes it, for K independent replicas at once.

    emb    = C[X].view(N, block_size * emb)          # look up and concatenate the context's embeddings
    hpre   = emb @ W1 + b1                           # (optionally batch- or layer-normalized)
    h      = tanh(hpre)
    logits = h @ W2 + b2 [+ emb @ D]                # D: the paper's direct connections (model.direct)
    loss   = cross_entropy(logits, Y)

Every parameter carries a leading replica dimension K (K = 1 for a plain run), so K models of the same
shape train side by side with batched matrix products. All parameters live in one flat buffer, views of which
are the parameters, so a checkpoint is one tensor.

`forward` here is the readable reference (autograd-friendly); `step.py` holds the fast training step
with the hand-derived backward pass, tested against this one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

BN_EPS = 1e-5
BN_MOMENTUM = 0.001  # the lecture's running-statistics update rate
PAD_LOGIT = -1e9  # bias of the padding classes of the output layer (finite: 0 * -inf would be NaN)


def tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) = 2 sigmoid(2x) - 1: this torch build's CPU tanh is several times slower than its
    sigmoid (measured 20 us vs 3.4 us on 6400 floats), and evaluation runs it on millions."""
    s = torch.sigmoid(2 * x)
    return 2 * s - 1 if s.requires_grad else s.mul_(2).sub_(1)  # in place only where autograd is off


def replica_losses(logits: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Per-replica mean cross-entropy of logits (K, N, V) against Y (K, N): shape (K,)."""
    K, N, V = logits.shape
    return F.cross_entropy(logits.reshape(K * N, V), Y.reshape(K * N), reduction="none").view(K, N).mean(1)


def summed_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each replica's summed cross-entropy of logits (K, n, V) against targets y (n,) shared by the replicas, in
    float64 on the CPU (MPS has no float64): one chunk of an evaluation."""
    K, n, V = logits.shape
    ce = F.cross_entropy(logits.reshape(-1, V), y.repeat(K), reduction="none")
    return ce.view(K, n).sum(1).cpu().double()


def chunks(X: torch.Tensor, Y: torch.Tensor, replicas: int, device, chunk: int = 32768):
    """An evaluation's no-grad chunks of (X, Y) on the device, smaller with more replicas."""
    chunk = max(1024, chunk // replicas)
    for i in range(0, X.shape[0], chunk):
        yield X[i : i + chunk].to(device), Y[i : i + chunk].to(device)


class MLP:
    """K replicas of the lecture's MLP; plain tensors, no nn.Module, so the fast step can own them."""

    DECAYED = ("C", "W1", "W2", "D")  # weight decay applies to these, not to biases or norm parameters
    trainable = True  # by gradient steps (the bigram is counted)

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        emb: int,
        hidden: int,
        replicas: int = 1,
        norm: str = "none",
        device: torch.device | str = "cpu",
        direct: bool = False,
    ):
        self.vocab_size, self.block_size, self.emb, self.hidden = vocab_size, block_size, emb, hidden
        self.replicas, self.norm, self.direct, self.layers = replicas, norm, direct, 1
        K, V, E, H, BE = replicas, vocab_size, emb, hidden, block_size * emb
        # Each bias is stored as the last row of its weight matrix (W1a = [W1; b1], W2a = [W2; b2]) so
        # the fast step's products with a ones column compute and update both in one call.
        # The output layer is padded to a multiple of 16 classes: MKL's small products run ~1.7x faster
        # at width 32 than at 27. Padded classes have zero weights and a -1e9 bias, so their softmax
        # probability is exactly 0, their gradient is exactly 0 and they never change.
        # The direct connections D are more rows of the output layer, W2a = [W2; b2; D], against [h | 1 | emb].
        Vp = -(-V // 16) * 16
        shapes = {"C": (K, V, E), "W1a": (K, BE + 1, H), "W2a": (K, H + 1 + (BE if direct else 0), Vp)}
        if norm != "none":
            shapes.update(gain=(K, H), shift=(K, H))
        self.flat = torch.zeros(sum(math.prod(s) for s in shapes.values()), device=device)
        self.storage: dict[str, torch.Tensor] = {}
        offset = 0
        for name, shape in shapes.items():  # views into self.flat
            n = math.prod(shape)
            self.storage[name] = self.flat[offset : offset + n].view(shape)
            offset += n
        W1a, W2a = self.storage["W1a"], self.storage["W2a"]
        W2a[:, H, V:] = PAD_LOGIT
        self.params: dict[str, torch.Tensor] = {
            "C": self.storage["C"],
            "W1": W1a[:, :BE],
            "b1": W1a[:, BE],
            "W2": W2a[:, :H, :V],
            "b2": W2a[:, H, :V],
        }
        if direct:
            self.params["D"] = W2a[:, H + 1 :, :V]
        if norm != "none":
            self.params.update(gain=self.storage["gain"], shift=self.storage["shift"])
        self.buffers: dict[str, torch.Tensor] = {}
        if norm == "batch":
            self.buffers = {
                "running_mean": torch.zeros(K, H, device=device),
                "running_var": torch.ones(K, H, device=device),
            }

    @property
    def device(self) -> torch.device:
        return self.flat.device

    def num_params(self) -> int:
        """Parameters of one replica (the output layer's padding not counted)."""
        return sum(p[0].numel() for p in self.params.values())

    def step_macs(self, batch: int) -> int:
        """About the multiply-adds of one training step: 3 products (forward, two backward) per layer."""
        BE, V = self.block_size * self.emb, self.vocab_size
        return self.replicas * batch * (self.hidden * (BE + V) + (BE * V if self.direct else 0)) * 3

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "flat": self.flat.detach().cpu().clone(),
            **{k: v.detach().cpu().clone() for k, v in self.buffers.items()},
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.flat.copy_(state["flat"])
        for k, v in self.buffers.items():
            v.copy_(state[k])

    # -- initialization ---------------------------------------------------------------------------

    def init_(self, recipe: str, seeds: Sequence[int]) -> MLP:
        """Draw each replica's parameters from its own generator (replica k from seeds[k])."""
        for k, seed in enumerate(seeds):
            g = torch.Generator().manual_seed(int(seed))
            # the lecture's draw order: C, W1, b1, W2, b2, each torch.randn on the CPU generator
            C = torch.randn(self.vocab_size, self.emb, generator=g)
            W1 = torch.randn(self.block_size * self.emb, self.hidden, generator=g)
            b1 = torch.randn(self.hidden, generator=g)
            W2 = torch.randn(self.hidden, self.vocab_size, generator=g)
            b2 = torch.randn(self.vocab_size, generator=g)
            if recipe == "scaled":
                # makemore part 3: tanh gain 5/3 over sqrt(fan_in) keeps tanh out of saturation; a
                # small output layer and zero bias make the initial softmax near uniform (loss ~ ln V).
                W1 *= (5 / 3) / math.sqrt(self.block_size * self.emb)
                b1 *= 0.01
                W2 *= 0.01
                b2 *= 0
            elif recipe != "lecture":
                raise ValueError(f"unknown init recipe {recipe!r}")
            for name, value in zip(("C", "W1", "b1", "W2", "b2"), (C, W1, b1, W2, b2)):
                self.params[name][k].copy_(value)
            if self.norm != "none":
                self.params["gain"][k].fill_(1.0)
                self.params["shift"][k].zero_()
            if self.direct:  # as Net: the direct connections start at zero
                self.params["D"][k].zero_()
        return self

    # -- the reference forward pass ---------------------------------------------------------------

    def forward(
        self, X: torch.Tensor, params: dict[str, torch.Tensor] | None = None, train: bool = False
    ) -> torch.Tensor:
        """X: (K, N, block_size) indices -> logits (K, N, vocab). `params` lets autograd use copies.
        With batch norm, train=True uses batch statistics (and updates the running ones)."""
        p = self.params if params is None else params
        K, N, B = X.shape
        emb = torch.stack([p["C"][k][X[k]] for k in range(K)]).view(K, N, B * self.emb)
        hpre = torch.baddbmm(p["b1"].unsqueeze(1), emb, p["W1"])
        if self.norm == "batch":
            if train:
                mean = hpre.mean(1, keepdim=True)
                var = hpre.var(1, keepdim=True, unbiased=False)
                with torch.no_grad():
                    rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
                    rm.lerp_(mean.squeeze(1), BN_MOMENTUM)
                    rv.lerp_(var.squeeze(1) * N / max(N - 1, 1), BN_MOMENTUM)
            else:
                mean = self.buffers["running_mean"].unsqueeze(1)
                var = self.buffers["running_var"].unsqueeze(1)
            hpre = (hpre - mean) / torch.sqrt(var + BN_EPS) * p["gain"].unsqueeze(1) + p["shift"].unsqueeze(1)
        elif self.norm == "layer":
            hpre = F.layer_norm(hpre, (self.hidden,), eps=BN_EPS) * p["gain"].unsqueeze(1) + p["shift"].unsqueeze(1)
        h = tanh(hpre)
        logits = torch.baddbmm(p["b2"].unsqueeze(1), h, p["W2"])
        return torch.baddbmm(logits, emb, p["D"]) if self.direct else logits

    def loss(self, X: torch.Tensor, Y: torch.Tensor, params=None, train: bool = False) -> torch.Tensor:
        """Per-replica mean cross-entropy, shape (K,)."""
        return replica_losses(self.forward(X, params, train), Y)

    @torch.no_grad()
    def evaluate(self, X: torch.Tensor, Y: torch.Tensor, chunk: int = 32768) -> torch.Tensor:
        """Mean loss of each replica over all of (X, Y) (shared by the replicas), in no-grad chunks."""
        total = torch.zeros(self.replicas, dtype=torch.float64)
        for x, y in chunks(X, Y, self.replicas, self.device, chunk):
            if self.norm == "none":
                for k in range(self.replicas):
                    total[k] += F.cross_entropy(self._plain_logits(k, x), y, reduction="sum").cpu().double()
            else:
                total += summed_losses(self.forward(x.unsqueeze(0).expand(self.replicas, len(x), -1)), y)
        return (total / max(X.shape[0], 1)).float()

    def _plain_logits(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """forward() of replica k without normalization, for large no-grad batches: 2-D products and
        tanh as an in-place 2 sigmoid(2x) - 1 (half the memory traffic of the general path)."""
        p = {name: t[k] for name, t in self.params.items()}
        emb = p["C"][x].view(x.shape[0], -1)
        h = torch.addmm(p["b1"], emb, p["W1"], beta=2, alpha=2).sigmoid_().mul_(2).sub_(1)
        logits = torch.addmm(p["b2"], h, p["W2"])
        return logits.addmm_(emb, p["D"]) if self.direct else logits

    @torch.no_grad()
    def next_char_probs(self, context: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """context: (K, N, block_size) -> probabilities (K, N, vocab) for sampling."""
        return torch.softmax(self.forward(context) / temperature, dim=-1)


class Net(torch.nn.Module):
    """K replicas of the MLP as an nn.Module, for the autograd engine and torch.optim: `layers` tanh layers of
    width `hidden` (the norm applied to each), and optionally the paper's direct connections D from the
    concatenated embeddings to the output (logits += emb @ D):

        x = emb;  x = tanh(norm(x @ W_l + b_l)) for l = 1..layers;  logits = x @ Wout + bout [+ emb @ D]

    With layers=1 and no direct connections it is MLP in another form, drawn from the same generators
    (C, W1, b1, Wout, bout in the lecture's order), so the two engines start from the same parameters.
    Every parameter has the leading replica dimension K; matrices (K, in, out) and the embedding table are
    3-D, biases and norm parameters 2-D (optim.py decays only the former)."""

    trainable = True

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        emb: int,
        hidden: int,
        replicas: int = 1,
        norm: str = "none",
        layers: int = 1,
        direct: bool = False,
        device: torch.device | str = "cpu",
    ):
        super().__init__()
        self.vocab_size, self.block_size, self.emb, self.hidden = vocab_size, block_size, emb, hidden
        self.replicas, self.norm, self.layers, self.direct = replicas, norm, layers, direct
        K, V, E, H, BE = replicas, vocab_size, emb, hidden, block_size * emb

        def param(*shape):
            return torch.nn.Parameter(torch.zeros(*shape, device=device))

        self.C = param(K, V, E)
        for i in range(1, layers + 1):
            setattr(self, f"W{i}", param(K, BE if i == 1 else H, H))
            setattr(self, f"b{i}", param(K, H))
            if norm != "none":
                setattr(self, f"gain{i}", torch.nn.Parameter(torch.ones(K, H, device=device)))
                setattr(self, f"shift{i}", param(K, H))
            if norm == "batch":
                self.register_buffer(f"running_mean{i}", torch.zeros(K, H, device=device))
                self.register_buffer(f"running_var{i}", torch.ones(K, H, device=device))
        self.Wout, self.bout = param(K, H, V), param(K, V)
        if direct:
            self.D = param(K, BE, V)

    @property
    def device(self) -> torch.device:
        return self.C.device

    @property
    def params(self) -> dict[str, torch.Tensor]:
        return dict(self.named_parameters())

    def num_params(self) -> int:
        return sum(p[0].numel() for p in self.parameters())

    def step_macs(self, batch: int) -> int:
        BE, H, V = self.block_size * self.emb, self.hidden, self.vocab_size
        per_example = BE * H + (self.layers - 1) * H * H + H * V + (BE * V if self.direct else 0)
        return self.replicas * batch * per_example * 3

    def state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:  # plain dict of CPU copies
        return {k: v.detach().cpu().clone() for k, v in super().state_dict(*args, **kwargs).items()}

    @torch.no_grad()
    def init_(self, recipe: str, seeds: Sequence[int]) -> Net:
        """Replica k from seeds[k]: C, then each layer's W and b, then Wout, bout (MLP's order for one layer);
        D starts at zero, so the direct connections begin as the plain model and learn what they add."""
        BE, H, V = self.block_size * self.emb, self.hidden, self.vocab_size
        for k, seed in enumerate(seeds):
            g = torch.Generator().manual_seed(int(seed))
            self.C[k].copy_(torch.randn(V, self.emb, generator=g))
            for i in range(1, self.layers + 1):
                fan_in = BE if i == 1 else H
                W = torch.randn(fan_in, H, generator=g)
                b = torch.randn(H, generator=g)
                if recipe == "scaled":  # as MLP.init_: tanh gain 5/3 over sqrt(fan_in), small bias
                    W *= (5 / 3) / math.sqrt(fan_in)
                    b *= 0.01
                getattr(self, f"W{i}")[k].copy_(W)
                getattr(self, f"b{i}")[k].copy_(b)
            Wout = torch.randn(H, V, generator=g)
            bout = torch.randn(V, generator=g)
            if recipe == "scaled":
                Wout *= 0.01
                bout *= 0
            elif recipe != "lecture":
                raise ValueError(f"unknown init recipe {recipe!r}")
            self.Wout[k].copy_(Wout)
            self.bout[k].copy_(bout)
        return self

    def forward(self, X: torch.Tensor, params=None, train: bool = False) -> torch.Tensor:
        """X: (K, N, block_size) -> logits (K, N, vocab). With batch norm, train=True uses (and updates the
        running averages from) the batch statistics, as MLP.forward."""
        K, N, B = X.shape
        V = self.vocab_size
        offset = (torch.arange(K, device=X.device) * V).view(K, 1, 1)
        emb = self.C.view(K * V, self.emb)[(X + offset).view(-1)].view(K, N, B * self.emb)
        x = emb
        for i in range(1, self.layers + 1):
            b = getattr(self, f"b{i}")
            # batch norm subtracts the batch mean, so a bias before it has gradient exactly 0 (float noise in
            # practice, which Adam would scale up to steps of lr): it is held fixed
            b = b.detach() if self.norm == "batch" else b
            hpre = torch.baddbmm(b.unsqueeze(1), x, getattr(self, f"W{i}"))
            if self.norm != "none":  # in fp32 also under bf16 autocast: batch statistics and running averages
                hpre = self._normalize(hpre.float(), i, train)
            x = tanh(hpre)
        logits = torch.baddbmm(self.bout.unsqueeze(1), x, self.Wout)
        if self.direct:
            logits = torch.baddbmm(logits, emb, self.D)
        return logits

    def _normalize(self, hpre: torch.Tensor, i: int, train: bool) -> torch.Tensor:
        gain, shift = getattr(self, f"gain{i}").unsqueeze(1), getattr(self, f"shift{i}").unsqueeze(1)
        if self.norm == "layer":
            return F.layer_norm(hpre, (self.hidden,), eps=BN_EPS) * gain + shift
        rm, rv = getattr(self, f"running_mean{i}"), getattr(self, f"running_var{i}")
        if train:
            N = hpre.shape[1]
            mean = hpre.mean(1, keepdim=True)
            var = hpre.var(1, keepdim=True, unbiased=False)
            with torch.no_grad():
                rm.lerp_(mean.squeeze(1), BN_MOMENTUM)
                rv.lerp_(var.squeeze(1) * N / max(N - 1, 1), BN_MOMENTUM)
        else:
            mean, var = rm.unsqueeze(1), rv.unsqueeze(1)
        return (hpre - mean) / torch.sqrt(var + BN_EPS) * gain + shift

    def loss(self, X: torch.Tensor, Y: torch.Tensor, params=None, train: bool = False) -> torch.Tensor:
        """Per-replica mean cross-entropy, shape (K,)."""
        return replica_losses(self.forward(X, train=train), Y)

    @torch.no_grad()
    def evaluate(self, X: torch.Tensor, Y: torch.Tensor, chunk: int = 32768) -> torch.Tensor:
        """Mean loss of each replica over all of (X, Y), in no-grad chunks summed in float64."""
        total = torch.zeros(self.replicas, dtype=torch.float64)
        for x, y in chunks(X, Y, self.replicas, self.device, chunk):
            total += summed_losses(self.forward(x.unsqueeze(0).expand(self.replicas, len(x), -1)), y)
        return (total / max(X.shape[0], 1)).float()

    @torch.no_grad()
    def next_char_probs(self, context: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        return torch.softmax(self.forward(context) / temperature, dim=-1)


class Bigram:
    """The count model of the previous lecture: P[i, j] = (N[i, j] + 1) / sum_j (N[i, j] + 1)."""

    trainable = False  # counted by fit(), not trained by steps

    def __init__(self, vocab_size: int, device: torch.device | str = "cpu"):
        self.vocab_size, self.block_size, self.replicas = vocab_size, 1, 1
        self.counts = torch.zeros(vocab_size, vocab_size, device=device)
        self.logP = torch.full((vocab_size, vocab_size), -math.log(vocab_size), device=device)

    @property
    def device(self) -> torch.device:
        return self.counts.device

    def num_params(self) -> int:
        return self.counts.numel()

    def step_macs(self, batch: int) -> int:
        return 0

    def fit(self, X: torch.Tensor, Y: torch.Tensor) -> None:
        """Count every (previous char, next char) pair of the training contexts; add-one smoothing."""
        idx = X[:, -1].to(self.device) * self.vocab_size + Y.to(self.device)
        self.counts = torch.bincount(idx, minlength=self.vocab_size**2).view(self.vocab_size, self.vocab_size).float()
        P = self.counts + 1
        self.logP = (P / P.sum(1, keepdim=True)).log()

    def forward(self, X: torch.Tensor, params=None, train: bool = False) -> torch.Tensor:
        return self.logP[X[..., -1]]  # log-probabilities are valid logits

    @torch.no_grad()
    def evaluate(self, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        lp = self.logP[X[:, -1].to(self.device), Y.to(self.device)]
        return (-lp.cpu().double().mean()).float().view(1)

    @torch.no_grad()
    def next_char_probs(self, context: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        return torch.softmax(self.forward(context) / temperature, dim=-1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"counts": self.counts.cpu().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.counts = state["counts"].to(self.device)
        P = self.counts + 1
        self.logP = (P / P.sum(1, keepdim=True)).log()


def build(
    kind: str,
    vocab_size: int,
    *,
    block_size: int,
    emb: int,
    hidden: int,
    norm: str = "none",
    init: str = "lecture",
    seed: int = 2147483647,
    replicas: int = 1,
    layers: int = 1,
    direct: bool = False,
    form: str = "flat",
    device="cpu",
):
    """The model of a run: replica k of an MLP is drawn from seed + k (replica 0 is the lecture's).
    form: "flat" (MLP, for the fast engine: one layer) or "module" (Net, for the autograd engine)."""
    if kind == "bigram":
        return Bigram(vocab_size, device=device)
    seeds = [seed + k for k in range(replicas)]
    if form == "module":
        net = Net(vocab_size, block_size, emb, hidden, replicas, norm, layers, direct, device=device)
        return net.init_(init, seeds)
    if layers != 1:
        raise ValueError("the flat MLP has one hidden layer: use form='module'")
    model = MLP(vocab_size, block_size, emb, hidden, replicas=replicas, norm=norm, device=device, direct=direct)
    return model.init_(init, seeds)


def from_config(m: dict, vocab_size: int, *, seed: int, replicas: int = 1, form: str = "flat", device="cpu"):
    """The model of a run from its `model` config (as a dict); the bigram has one replica."""
    return build(
        m["kind"],
        vocab_size,
        block_size=m["block_size"],
        emb=m["emb"],
        hidden=m["hidden"],
        norm=m["norm"],
        init=m["init"],
        seed=seed,
        replicas=replicas if m["kind"] == "mlp" else 1,
        layers=m.get("layers", 1),
        direct=m.get("direct", False),
        form=form,
        device=device,
    )


def from_checkpoint(state: dict, device="cpu"):
    """Rebuild the model and vocabulary saved by a run (no Hydra config needed): the flat MLP of the fast
    engine (its state has "flat") or the Net of the autograd engine."""
    from .data import Vocab

    m = state["config"]["model"]
    vocab = Vocab(state["vocab"][1:])
    model = from_config(
        m,
        len(vocab),
        seed=0,
        replicas=state["config"]["train"]["replicas"],
        form="flat" if "flat" in state["model"] or m["kind"] != "mlp" else "module",
        device=device,
    )
    model.load_state_dict(state["model"])
    return model, vocab
