"""The two engines: the fast engine equals the autograd engine on every config it supports (one step and a few
hundred, every optimizer), each model option matches a plain reference forward and trains, the optimizer
state survives a checkpoint, and the engine choice."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from makemore import engine as engines
from makemore import optim
from makemore.config import ConfigError
from makemore.data import Vocab, build_dataset
from makemore.engine.fast import FastEngine
from makemore.model import MLP, Net, build
from makemore.schedule import step_schedule
from makemore.train import Progress, fit

OPTIMIZERS = {
    "sgd": {"name": "sgd", "momentum": 0.0, "nesterov": False, "weight_decay": 0.0},
    "sgd_wd": {"name": "sgd", "momentum": 0.0, "nesterov": False, "weight_decay": 0.01},
    "momentum": {"name": "sgd", "momentum": 0.9, "nesterov": False, "weight_decay": 0.0},
    "nesterov_wd": {"name": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
    "adamw": {"name": "adamw", "betas": [0.9, 0.99], "eps": 1e-8, "weight_decay": 0.01},
}


def grid(names: str, axes: list, fast: set) -> tuple:
    """The cross product of `axes` as parametrize arguments; combinations outside `fast` are marked slow: the
    fast tier keeps a few that together cover every value, CI (both tiers) runs them all."""
    import itertools

    combos = list(itertools.product(*axes))
    return names, [pytest.param(*c, marks=() if c in fast else pytest.mark.slow) for c in combos]


WORDS = ["emma", "olivia", "ava", "isabella", "sophia", "charlotte", "mia", "amelia", "harper", "evelyn"] * 3


def pair(norm: str, K: int, hidden: int = 24, emb: int = 6, init: str = "scaled", direct: bool = False):
    """The same model in both forms, from the same seeds."""
    vocab = Vocab.from_words(WORDS)
    kw = dict(block_size=3, emb=emb, hidden=hidden, norm=norm, init=init, seed=7, replicas=K, direct=direct)
    return vocab, build("mlp", len(vocab), form="flat", **kw), build("mlp", len(vocab), form="module", **kw)


NAMES = {"C": "C", "W1": "W1", "b1": "b1", "W2": "Wout", "b2": "bout", "gain": "gain1", "shift": "shift1", "D": "D"}


def assert_same_params(flat: MLP, net: Net, **tol):
    for a, b in NAMES.items():
        if a in flat.params:
            torch.testing.assert_close(flat.params[a], net.params[b].detach(), msg=a, **tol)
    for a in flat.buffers:
        torch.testing.assert_close(flat.buffers[a], getattr(net, a + "1"), msg=a, **tol)


@pytest.mark.parametrize("init", ["lecture", "scaled"])
@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_one_layer_net_starts_from_the_flat_mlps_parameters_and_forward(init, norm):
    vocab, flat, net = pair(norm, 2, init=init)
    assert_same_params(flat, net, rtol=0, atol=0)
    assert net.num_params() == flat.num_params()
    X = torch.randint(0, len(vocab), (2, 40, 3))
    for train in (False, True):
        torch.testing.assert_close(net.forward(X, train=train), flat.forward(X, train=train))


def run_engines(norm, K, opt, steps, lr=None, direct=False):
    vocab, flat, net = pair(norm, K, direct=direct)
    Xtr, Ytr = build_dataset(WORDS, vocab, 3)
    N = 32
    fast, auto = engines.make(flat, N, opt), engines.make(net, N, opt)
    assert type(fast).__name__ == "FastEngine" and type(auto).__name__ == "AutogradEngine"
    ix = torch.randint(0, len(Ytr), (steps, K, N), generator=torch.Generator().manual_seed(1))
    # momentum 0.9 steps ~10x as far as plain SGD: a tenth of its lr keeps both trajectories well-conditioned
    lrs = [0.05, 0.01] if opt["name"] == "adamw" else [0.02, 0.005] if opt.get("momentum") else [0.2, 0.05]
    lr = lr or step_schedule(lrs, [steps // 2])
    losses = []
    for eng in (fast, auto):
        rows, targets = eng.batches(Xtr, Ytr, ix)
        picked = torch.empty(steps, *targets[0].shape)
        for i in range(steps):
            eng.step(rows[i], targets[i], lr(i), picked[i])
        losses.append(-picked.view(steps, K, N).mean(2))
    return flat, net, losses


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
@pytest.mark.parametrize("K", [1, 3])
def test_one_step_of_the_fast_engine_equals_the_autograd_engine(opt, norm, K):
    flat, net, (fast, auto) = run_engines(norm, K, OPTIMIZERS[opt], 1)
    torch.testing.assert_close(fast, auto, rtol=1e-5, atol=1e-6)
    assert_same_params(flat, net, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    *grid(
        "opt, norm, K",
        [list(OPTIMIZERS), ["none", "batch", "layer"], [1, 2]],
        {
            ("sgd", "none", 1),
            ("momentum", "batch", 2),
            ("nesterov_wd", "layer", 1),
            ("adamw", "layer", 2),
            ("sgd_wd", "batch", 1),
        },
    )
)
def test_three_hundred_steps_of_the_fast_engine_track_the_autograd_engine(opt, norm, K):
    flat, net, (fast, auto) = run_engines(norm, K, OPTIMIZERS[opt], 300)
    torch.testing.assert_close(fast, auto, rtol=1e-3, atol=1e-3)
    assert_same_params(flat, net, rtol=1e-3, atol=1e-3)
    assert auto[-20:].mean() < auto[:20].mean() - 0.5  # it did learn


@pytest.mark.parametrize(
    *grid("opt, norm", [list(OPTIMIZERS), ["none", "batch", "layer"]], {("sgd", "none"), ("adamw", "layer")})
)
def test_direct_connections_on_the_fast_engine_equal_the_autograd_engine(opt, norm):
    flat, net, (fast, auto) = run_engines(norm, 2, OPTIMIZERS[opt], 1, direct=True)
    torch.testing.assert_close(fast, auto, rtol=1e-5, atol=1e-6)
    assert_same_params(flat, net, rtol=1e-5, atol=1e-6)
    flat, net, (fast, auto) = run_engines(norm, 2, OPTIMIZERS[opt], 300, direct=True)
    torch.testing.assert_close(fast, auto, rtol=1e-3, atol=1e-3)
    assert_same_params(flat, net, rtol=1e-3, atol=1e-3)
    assert flat.params["D"].abs().max() > 0.01  # the direct connections did learn
    X = torch.randint(0, flat.vocab_size, (2, 50, 3))
    torch.testing.assert_close(flat.forward(X), net.forward(X).detach(), rtol=1e-3, atol=1e-3)
    Xe, Ye = X.reshape(100, 3), torch.randint(0, flat.vocab_size, (100,))  # the plain-logits evaluation path
    torch.testing.assert_close(flat.evaluate(Xe, Ye), net.evaluate(Xe, Ye), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("impl", ["fused", "foreach"])
def test_adamw_with_torchs_kernels_equals_the_closed_form(impl):
    vocab, a, _ = pair("layer", 2)
    b = build("mlp", len(vocab), block_size=3, emb=6, hidden=24, norm="layer", init="scaled", seed=7, replicas=2)
    Xtr, Ytr = build_dataset(WORDS, vocab, 3)
    ea = FastEngine(a, 16, OPTIMIZERS["adamw"])
    eb = FastEngine(b, 16, OPTIMIZERS["adamw"], impl=impl)
    ix = torch.randint(0, len(Ytr), (50, 2, 16), generator=torch.Generator().manual_seed(3))
    for e in (ea, eb):
        rows, targets = e.batches(Xtr, Ytr, ix)
        for i in range(50):
            e.step(rows[i], targets[i], 0.01, torch.empty(targets[i].shape))
    torch.testing.assert_close(a.flat, b.flat, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ea.state()["buf2"], eb.state()["buf2"], rtol=1e-5, atol=1e-9)


def test_weight_decay_spares_biases_and_norm_parameters():
    _, flat, net = pair("batch", 1)
    decayed = {n for n, p in net.named_parameters() if optim.decayed(p)}
    assert decayed == {"C", "W1", "Wout"}
    opt = optim.build(OPTIMIZERS["adamw"], net.parameters())
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    # the fast engine's mask: 1 on C, W1, W2 (with the output padding), 0 on the bias rows and the norm
    eng = FastEngine(flat, 8, OPTIMIZERS["adamw"])
    wd = eng.update.wd
    view = lambda t: wd.as_strided(t.shape, t.stride(), t.storage_offset())  # noqa: E731
    for name, p in flat.params.items():
        assert torch.all(view(p) == (0.01 if name in MLP.DECAYED else 0.0)), name


# -- the model options: a plain reference forward, written out per replica with loops --------------------------


def reference_logits(net: Net, X: torch.Tensor, train: bool) -> torch.Tensor:
    """Per replica, 2-D products, torch.tanh, the norms written out: Bengio et al. 2003 with L hidden layers,
    y = bout + emb D + tanh(... tanh(emb W1 + b1) ...) Wout."""
    p = {n: t.detach() for n, t in net.named_parameters()}
    out = []
    for k in range(net.replicas):
        emb = p["C"][k][X[k]].reshape(X.shape[1], -1)
        x = emb
        for i in range(1, net.layers + 1):
            h = x @ p[f"W{i}"][k] + p[f"b{i}"][k]
            if net.norm == "batch":
                if train:
                    mean, var = h.mean(0), h.var(0, unbiased=False)
                else:
                    mean, var = getattr(net, f"running_mean{i}")[k], getattr(net, f"running_var{i}")[k]
                h = (h - mean) / torch.sqrt(var + 1e-5) * p[f"gain{i}"][k] + p[f"shift{i}"][k]
            elif net.norm == "layer":
                mean, var = h.mean(1, keepdim=True), h.var(1, unbiased=False, keepdim=True)
                h = (h - mean) / torch.sqrt(var + 1e-5) * p[f"gain{i}"][k] + p[f"shift{i}"][k]
            x = torch.tanh(h)
        logits = x @ p["Wout"][k] + p["bout"][k]
        if net.direct:
            logits = logits + emb @ p["D"][k]
        out.append(logits)
    return torch.stack(out)


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("direct", [False, True])
@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_each_model_option_matches_a_plain_reference_forward(layers, direct, norm):
    torch.manual_seed(0)
    net = Net(11, 3, 4, 9, replicas=2, norm=norm, layers=layers, direct=direct).init_("scaled", [1, 2])
    with torch.no_grad():  # move every parameter off its init (D starts at zero, gains at one)
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    X = torch.randint(0, 11, (2, 20, 3))
    torch.testing.assert_close(net.forward(X, train=False), reference_logits(net, X, False), rtol=1e-4, atol=1e-5)
    expected = reference_logits(net, X, True)  # before forward(train=True) moves the running statistics
    torch.testing.assert_close(net.forward(X, train=True), expected, rtol=1e-4, atol=1e-5)
    names = {n for n, _ in net.named_parameters()}
    assert ("D" in names) == direct and f"W{layers}" in names and f"W{layers + 1}" not in names


@pytest.mark.parametrize(
    "options", [{"layers": 3}, {"direct": True}, {"layers": 2, "direct": True, "norm": "batch"}, {"norm": "layer"}]
)
@pytest.mark.parametrize("opt", ["sgd", "adamw"])
def test_each_model_option_trains_on_the_autograd_engine(options, opt, tiny_data):
    kw = dict(block_size=3, emb=8, hidden=32, init="scaled", replicas=2, **options)
    net = build("mlp", len(tiny_data.vocab), form="module", **kw)
    before = net.evaluate(tiny_data.X["train"], tiny_data.Y["train"])
    progress = fit(
        net,
        tiny_data,
        steps=400,
        batch_size=32,
        schedule=step_schedule([0.01 if opt == "adamw" else 0.1], []),
        eval_every=400,
        checkpoint_every=400,
        seed=1,
        optimizer=OPTIMIZERS[opt],
    )
    after = torch.tensor(progress.evals[-1]["train"])
    assert torch.all(after < before - 0.4), (before, after)


# -- the optimizer state in checkpoints: a resumed fit ends bit-identical ---------------------------------------


@pytest.mark.parametrize(
    *grid(
        "form, opt", [["flat", "module"], ["sgd_wd", "nesterov_wd", "adamw"]], {("flat", "adamw"), ("module", "sgd_wd")}
    )
)
def test_resumed_fit_is_bit_identical_with_the_optimizer_state(form, opt, tiny_data):
    def model():
        kw = dict(block_size=3, emb=4, hidden=16, init="scaled", norm="batch", replicas=2, seed=3)
        return build("mlp", len(tiny_data.vocab), form=form, **kw)

    saved = {}

    class Keep:
        def on_segment(self, *a): ...
        def on_eval(self, *a): ...
        def on_checkpoint(self, p: Progress):
            saved[p.step] = (p.state(), model_.state_dict())

    kw = dict(
        steps=600,
        batch_size=16,
        schedule=step_schedule([0.05, 0.01], [300]),
        eval_every=600,
        checkpoint_every=200,
        seed=5,
        optimizer=OPTIMIZERS[opt],
    )
    model_ = model()
    full = fit(model_, tiny_data, hooks=Keep(), **kw)
    end = model_.state_dict()
    progress_state, weights = saved[200]
    if opt == "adamw":  # the moments are in the checkpoint
        assert progress_state["optimizer"]
    model_ = model()
    model_.load_state_dict(weights)
    resumed = fit(model_, tiny_data, progress=Progress.from_state(progress_state), hooks=Keep(), **kw)
    for k, v in end.items():
        assert torch.equal(model_.state_dict()[k], v), k
    assert torch.equal(full.minibatch_losses(), resumed.minibatch_losses())


def test_engine_choice():
    assert engines.resolve("auto", {"layers": 1, "direct": False}) == "fast"
    assert engines.resolve("auto", {"layers": 2, "direct": False}) == "autograd"
    assert engines.resolve("auto", {"layers": 1, "direct": True}) == "fast"
    assert engines.resolve("autograd", {"layers": 1, "direct": False}) == "autograd"
    with pytest.raises(ConfigError, match=r"train\.engine=fast does not support model\.layers=3"):
        engines.resolve("fast", {"layers": 3, "direct": False})


def test_the_lecture_loss_at_init_is_the_same_on_both_engines():
    _, flat, net = pair("none", 1, hidden=200, emb=10, init="lecture")
    X = torch.randint(0, flat.vocab_size, (1, 64, 3))
    Y = torch.randint(0, flat.vocab_size, (1, 64))
    ref = F.cross_entropy(flat.forward(X)[0], Y[0])
    assert math.isclose(float(net.loss(X, Y).detach()), float(ref), rel_tol=1e-5)
