"""The engines, against each other, in one place: the fast engine (engine/fast/) equals the autograd engine on every
config it supports (one step and a few hundred, every optimizer, every norm, K = 1 and K > 1, bf16 within its
rounding), on the same MLP module, whose parameters it trains in place; the optimizer state survives a checkpoint;
and which engine trains what."""

from __future__ import annotations

import itertools

import pytest
import torch

from makemore import engine as engines
from makemore.config import ConfigError
from makemore.data import Dataset, Vocab, build_dataset
from makemore.engine import optim
from makemore.engine.fast import FastEngine
from makemore.engine.fast.layout import decayed
from makemore.models import MLP, Bigram, Transformer, WaveNet
from makemore.schedule import step_schedule
from makemore.train import Loop, Progress, fit

OPTIMIZERS = {
    "sgd": {"name": "sgd", "momentum": 0.0, "nesterov": False, "weight_decay": 0.0},
    "sgd_wd": {"name": "sgd", "momentum": 0.0, "nesterov": False, "weight_decay": 0.01},
    "momentum": {"name": "sgd", "momentum": 0.9, "nesterov": False, "weight_decay": 0.0},
    "nesterov_wd": {"name": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
    "adamw": {"name": "adamw", "betas": [0.9, 0.99], "eps": 1e-8, "weight_decay": 0.01},
}
WORDS = ["emma", "olivia", "ava", "isabella", "sophia", "charlotte", "mia", "amelia", "harper", "evelyn"] * 3
VOCAB = Vocab.from_words(WORDS)


def grid(names: str, axes: list, fast: set, drop=lambda combo: False) -> tuple:
    """The cross product of `axes` (less the combinations `drop` refuses) as parametrize arguments; combinations
    outside `fast` are marked slow: the fast tier keeps a few that together cover every value, CI (both tiers) runs
    them all."""
    combos = [c for c in itertools.product(*axes) if not drop(c)]
    return names, [pytest.param(*c, marks=() if c in fast else pytest.mark.slow) for c in combos]


STACKS = ("mlp", "deep", "wavenet")  # what the fast engine trains: one tanh layer, three, WaveNet's levels


def twins(norm: str, K: int, hidden=24, emb=6, init="scaled", direct=False, stack="mlp", **kw) -> tuple[MLP, MLP]:
    """Two models drawn from the same seeds, one for each engine: the MLP (stack "deep": 3 layers) or WaveNet."""
    if stack == "wavenet":
        make = lambda: WaveNet(len(VOCAB), 4, emb, hidden, norm=norm, replicas=K, init=init, seed=7)  # noqa: E731
    else:
        layers = 3 if stack == "deep" else 1
        make = lambda: MLP(len(VOCAB), 3, emb, hidden, layers=layers, norm=norm, direct=direct, replicas=K,  # noqa: E731
                           init=init, seed=7, **kw)  # fmt: skip
    return make(), make()


def assert_same(a: MLP, b: MLP, **tol) -> None:
    """Every parameter and buffer of a equals b's (to `tol`)."""
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, msg=name, **tol)


def drive(engine, ix: torch.Tensor, lr) -> torch.Tensor:
    """Steps of `engine` on the batches ix (S, K, N) of WORDS' contexts; the minibatch losses (S, K)."""
    X, Y = build_dataset(WORDS, VOCAB, engine.model.block_size)
    S, K, N = ix.shape
    rows, targets = engine.batches(X, Y, ix)
    picked = torch.empty(S, *engine.slot)
    for i in range(S):
        engine.step(rows[i], targets[i], lr(i), picked[i])
    return -picked.view(S, K, -1).mean(2)


def run_engines(norm, K, opt, steps, direct=False, precision="fp32", hidden=24, emb=6, N=32, stack="mlp"):
    """The fast engine (in `precision`) and the fp32 autograd engine from the same parameters on the same batches."""
    fast, auto = twins(norm, K, hidden=hidden, emb=emb, direct=direct, stack=stack)
    n = len(build_dataset(WORDS, VOCAB, 3)[1])
    ix = torch.randint(0, n, (steps, K, N), generator=torch.Generator().manual_seed(1))
    # momentum 0.9 steps ~10x as far as plain SGD: a tenth of its lr keeps both trajectories well-conditioned;
    # AdamW at lr 0.05 is chaotic on the deeper stacks (a 1e-7 nudge to one autograd run moves it as far as the
    # other engine does), at 0.01 the engines agree to 1e-6
    lrs = [0.01, 0.002] if opt["name"] == "adamw" else [0.02, 0.005] if opt.get("momentum") else [0.2, 0.05]
    lr = step_schedule(lrs, [steps // 2])
    fast_engine = engines.make("fast", fast, N, opt, precision)
    auto_engine = engines.make("autograd", auto, N, opt)
    assert isinstance(fast_engine, FastEngine) and type(auto_engine).__name__ == "AutogradEngine"
    return fast, auto, drive(fast_engine, ix, lr), drive(auto_engine, ix, lr)


# -- one step, and three hundred ---------------------------------------------------------------------------------


def mlp_fast(combos: list[tuple]) -> set[tuple]:
    """The fast tier's share of a grid whose last axis is STACKS: every one-layer MLP combination, and each
    norm once on the deeper stacks (the CI runs them all)."""
    mlp = {c for c in combos if c[-1] == "mlp"}
    return mlp | {c for c in combos if c[-1] != "mlp" and c[0] == combos[0][0] and c[2] == 3 and c[1] != "none"}


# wd 1.0 decays by c = 1 - lr wd = 0.7, which the step undoes for the biases by dividing them by c first;
# wd 1 / 0.3 makes c = 0, where it keeps them aside instead
AXES = [[0.0, 0.01, 1.0, 1 / 0.3], ["none", "batch", "layer"], [1, 3], STACKS]


@pytest.mark.parametrize(*grid("wd, norm, K, stack", AXES, mlp_fast(list(itertools.product(*AXES)))))
def test_one_plain_sgd_step_equals_autograd_with_any_weight_decay(wd, norm, K, stack):
    fast, auto = twins(norm, K, hidden=7, emb=5, stack=stack)
    opt = OPTIMIZERS["sgd"] | {"weight_decay": wd}
    ix = torch.randint(0, 100, (1, K, 16), generator=torch.Generator().manual_seed(0))
    a = drive(engines.make("fast", fast, 16, opt), ix, lambda i: 0.3)
    b = drive(engines.make("autograd", auto, 16, opt), ix, lambda i: 0.3)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert_same(fast, auto, rtol=1e-5, atol=1e-6)


AXES2 = [list(OPTIMIZERS), ["none", "batch", "layer"], [1, 3], STACKS]


@pytest.mark.parametrize(*grid("opt, norm, K, stack", AXES2, mlp_fast(list(itertools.product(*AXES2)))))
def test_one_step_of_the_fast_engine_equals_the_autograd_engine(opt, norm, K, stack):
    fast, auto, a, b = run_engines(norm, K, OPTIMIZERS[opt], 1, stack=stack)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # AdamW's first step is about lr * sign(g): where g is near 0 its float noise moves the update (lr 0.05 here)
    assert_same(fast, auto, rtol=1e-5, atol=1e-4 if opt == "adamw" else 1e-6)


@pytest.mark.parametrize(
    *grid(
        "opt, norm, K, stack",
        [list(OPTIMIZERS), ["none", "batch", "layer"], [1, 2], STACKS],
        {("sgd", "none", 1, "mlp"), ("adamw", "layer", 2, "wavenet")},
    )
)
def test_three_hundred_steps_of_the_fast_engine_track_the_autograd_engine(opt, norm, K, stack):
    fast, auto, a, b = run_engines(norm, K, OPTIMIZERS[opt], 300, stack=stack)
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
    assert_same(fast, auto, rtol=1e-3, atol=1e-3)
    assert b[-20:].mean() < b[:20].mean() - 0.5  # it did learn


@pytest.mark.parametrize(*grid("opt, norm", [list(OPTIMIZERS), ["none", "batch", "layer"]], {("adamw", "layer")}))
def test_direct_connections_on_the_fast_engine_equal_the_autograd_engine(opt, norm):
    fast, auto, a, b = run_engines(norm, 2, OPTIMIZERS[opt], 1, direct=True)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert_same(fast, auto, rtol=1e-5, atol=1e-6)
    fast, auto, a, b = run_engines(norm, 2, OPTIMIZERS[opt], 300, direct=True)
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
    assert_same(fast, auto, rtol=1e-3, atol=1e-3)
    assert fast.D.abs().max() > 0.01  # the direct connections did learn
    X = torch.randint(0, fast.vocab_size, (2, 50, 3))
    with torch.no_grad():
        torch.testing.assert_close(fast.forward(X), auto.forward(X), rtol=1e-3, atol=1e-3)
    Xe, Ye = X.reshape(100, 3), torch.randint(0, fast.vocab_size, (100,))  # the plain-logits evaluation path
    torch.testing.assert_close(fast.evaluate(Xe, Ye), auto.evaluate(Xe, Ye), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_a_full_batch_fit_is_the_same_on_both_engines(norm):
    """fit(batch_size=0) over several segments (eval and checkpoint boundaries) on either engine: every step sees
    every training example, with the schedule's lr of that step and weight decay."""
    words = {"train": WORDS[:7], "dev": WORDS[7:9], "test": WORDS[9:10]}
    X, Y = zip(*(build_dataset(w, VOCAB, 3) for w in words.values()))
    data = Dataset(VOCAB, words, dict(zip(words, X)), dict(zip(words, Y)), "test")
    loop = Loop(steps=120, batch_size=0, schedule=step_schedule([0.5, 0.1], [45]), seed=0, eval_every=50,
                checkpoint_every=40)  # fmt: skip
    runs = []
    for name in ("fast", "autograd"):
        model = MLP(len(VOCAB), 3, 6, 20, norm=norm, replicas=2, init="scaled", seed=3)
        engine = engines.make(name, model, len(Y[0]), OPTIMIZERS["sgd"] | {"weight_decay": 0.01})
        runs.append((model, fit(model, engine, data, loop)))
    (fast, p_fast), (auto, p_auto) = runs
    assert len(p_fast.losses) > 1  # several segments
    torch.testing.assert_close(p_fast.minibatch_losses(), p_auto.minibatch_losses(), rtol=1e-4, atol=1e-5)
    assert_same(fast, auto, rtol=1e-4, atol=1e-5)
    losses = p_auto.minibatch_losses()
    assert (losses[-1] < losses[0] - 0.5).all()  # it did learn


# -- bf16 products ---------------------------------------------------------------------------------------------

# bf16 products run on any CPU (torch computes them without the instructions where a CPU lacks them, slowly): the
# numbers are tested everywhere; runs refuse bf16 where it would not be faster (device.check_precision)


@pytest.mark.parametrize(
    *grid(
        "opt, norm, K, direct, stack",
        [["sgd_wd", "adamw", "momentum"], ["none", "batch", "layer"], [1, 2], [False, True], STACKS],
        {
            ("sgd_wd", "layer", 1, False, "mlp"),
        },
        drop=lambda c: c[3] and c[4] != "mlp",  # direct connections are the one-layer MLP's
    )
)
def test_bf16_fast_engine_tracks_the_fp32_autograd_engine(opt, norm, K, direct, stack):
    fast, auto, low, ref = run_engines(norm, K, OPTIMIZERS[opt], 300, direct, "bf16", hidden=64, emb=8, stack=stack)
    # the first loss differs only by the products' bf16 rounding (8 bits of mantissa: ~0.4% per operand)
    torch.testing.assert_close(low[0], ref[0], rtol=1e-2, atol=0)
    assert not torch.equal(low, ref)  # the products did run in bf16
    # after 300 steps the trajectories agree to bf16's rounding, far below what training moved them
    assert (low[-50:].mean(0) - ref[-50:].mean(0)).abs().max() < 0.03
    assert ref[-50:].mean() < ref[:20].mean() - 0.5
    assert all(p.dtype == torch.float32 for p in fast.parameters())  # the master weights stay fp32
    # the weights differ by a small fraction of how far training moved them
    W0 = twins(norm, K, hidden=64, emb=8, direct=direct, stack=stack)[0].W1.detach()
    W16, W32 = fast.W1.detach(), auto.W1.detach()
    # (AdamW steps each weight by about lr whatever its gradient's size, so in the deeper stacks bf16's relative
    # noise in small gradients becomes whole steps: the weights drift further apart while the losses agree)
    share = 0.25 if opt == "adamw" and stack != "mlp" else 0.1
    assert (W16 - W32).norm() < share * (W32 - W0).norm()


# -- the optimizers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["fused", "foreach"])
def test_adamw_with_torchs_kernels_equals_the_closed_form(impl):
    a, b = twins("layer", 2)
    ea = FastEngine(a, 16, OPTIMIZERS["adamw"])
    eb = FastEngine(b, 16, OPTIMIZERS["adamw"], impl=impl)
    ix = torch.randint(0, 100, (50, 2, 16), generator=torch.Generator().manual_seed(3))
    for e in (ea, eb):
        drive(e, ix, lambda i: 0.01)
    torch.testing.assert_close(ea.layout.flat, eb.layout.flat, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ea.state()["buf2"], eb.state()["buf2"], rtol=1e-5, atol=1e-9)


def test_weight_decay_spares_biases_and_norm_parameters():
    fast, auto = twins("batch", 1)
    assert {n for n, p in auto.named_parameters() if optim.decayed(p)} == {"C", "W1", "Wout"}
    opt = optim.build(OPTIMIZERS["adamw"], auto.parameters())
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    # the fast engine's mask: 1 on C, W1, Wout (not the output padding), 0 on the bias rows and the norm
    eng = FastEngine(fast, 8, OPTIMIZERS["adamw"])
    wd = eng.update.wd
    for name, p in fast.named_parameters():
        view = wd.as_strided(p.shape, p.stride(), p.storage_offset())
        assert torch.all(view == (0.01 if decayed(name) else 0.0)), name
    assert float(wd.sum()) == pytest.approx(0.01 * sum(p.numel() for n, p in fast.named_parameters() if decayed(n)))


# -- one module, two engines ------------------------------------------------------------------------------------


def test_the_fast_engine_trains_the_modules_own_parameters():
    """After FastEngine is built, the module's parameters are views into its flat buffer: a step changes what the
    module's forward computes, and loading a state_dict into the module changes what the step reads."""
    model, twin = twins("layer", 1)
    engine = FastEngine(model, 16, OPTIMIZERS["sgd"])
    for _, p in model.named_parameters():
        assert p.untyped_storage().data_ptr() == engine.layout.flat.untyped_storage().data_ptr()
    X = torch.randint(0, model.vocab_size, (1, 16, 3))
    with torch.no_grad():
        before = model.forward(X).clone()
    drive(engine, torch.randint(0, 100, (3, 1, 16)), lambda i: 0.5)
    with torch.no_grad():
        assert not torch.equal(model.forward(X), before)
        model.load_state_dict(twin.state_dict())
        assert torch.equal(model.forward(X), before)  # back to the start, through the flat buffer


# -- the optimizer state in checkpoints: a resumed fit ends bit-identical ---------------------------------------


@pytest.mark.parametrize(
    *grid(
        "engine, opt",
        [["fast", "autograd"], ["sgd_wd", "nesterov_wd", "adamw"]],
        {("fast", "adamw"), ("autograd", "sgd_wd")},
    )
)
def test_resumed_fit_is_bit_identical_with_the_optimizer_state(engine, opt, tiny_data):
    saved = {}

    def fresh():
        model = MLP(len(tiny_data.vocab), 3, 4, 16, norm="batch", replicas=2, init="scaled", seed=3)
        return model, engines.make(engine, model, 16, OPTIMIZERS[opt])

    class Keep:
        def on_segment(self, *a): ...
        def on_eval(self, *a): ...
        def on_checkpoint(self, p: Progress):
            saved[p.step] = (p.state(), model.state_dict())

    loop = Loop(steps=600, batch_size=16, schedule=step_schedule([0.05, 0.01], [300]), seed=5, eval_every=600,
                checkpoint_every=200)  # fmt: skip
    model, eng = fresh()
    full = fit(model, eng, tiny_data, loop, Keep())
    end = model.state_dict()
    progress_state, weights = saved[200]
    if opt == "adamw":  # the moments are in the checkpoint
        assert progress_state["optimizer"]
    model, eng = fresh()
    model.load_state_dict(weights)
    resumed = fit(model, eng, tiny_data, loop, Keep(), Progress.from_state(progress_state))
    for k, v in end.items():
        assert torch.equal(model.state_dict()[k], v), k
    assert torch.equal(full.minibatch_losses(), resumed.minibatch_losses())


# -- which engine ------------------------------------------------------------------------------------------------


def test_engine_choice():
    one, three, direct, wavenet = MLP(27), MLP(27, layers=3), MLP(27, direct=True), WaveNet(27)
    assert all(engines.resolve("auto", m) == "fast" for m in (one, three, direct, wavenet))
    assert engines.resolve("autograd", one) == "autograd"
    assert engines.resolve("auto", Transformer(27)) == "autograd"
    assert engines.resolve("auto", Bigram(27)) == engines.resolve("fast", Bigram(27)) == "count"
    with pytest.raises(ConfigError, match=r"train\.engine=fast does not support model=transformer"):
        engines.resolve("fast", Transformer(27))
    with pytest.raises(ConfigError, match=r"train\.engine must be one of auto, fast, autograd, got 'turbo'"):
        engines.resolve("turbo", one)
    for dropped in (MLP(27, dropout=0.2), WaveNet(27, dropout=0.2)):  # the fast step has no dropout masks
        assert engines.resolve("auto", dropped) == "autograd"
        with pytest.raises(ConfigError, match=r"train\.engine=fast does not support model\.dropout=0\.2"):
            engines.resolve("fast", dropped)
