"""The model families (makemore/models/): their init recipes, their forward against plain references, their
evaluation, the bigram's counts, and each option training on the autograd engine."""

from __future__ import annotations

import math

import pytest
import torch

from makemore import engine as engines
from makemore import models
from makemore.data import Vocab, build_dataset
from makemore.models import MLP, Bigram
from makemore.schedule import step_schedule
from makemore.train import Loop, fit

ADAMW = {"name": "adamw", "betas": [0.9, 0.99], "eps": 1e-8, "weight_decay": 0.01}
SGD = {"name": "sgd", "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}


def test_lecture_init_is_the_lecture_recipe():
    g = torch.Generator().manual_seed(2147483647)
    C = torch.randn((27, 10), generator=g)
    W1 = torch.randn((30, 200), generator=g)
    b1 = torch.randn(200, generator=g)
    W2 = torch.randn((200, 27), generator=g)
    b2 = torch.randn(27, generator=g)
    m = MLP(27, block_size=3, emb=10, hidden=200, init="lecture", seed=2147483647)
    for name, ref in zip(("C", "W1", "b1", "Wout", "bout"), (C, W1, b1, W2, b2)):
        assert torch.equal(getattr(m, name)[0], ref), name
    assert m.num_params() == 11897


def test_replica_k_is_seeded_with_seed_plus_k():
    m = MLP(27, 3, 10, 20, seed=5, replicas=3, layers=2, norm="batch", init="scaled")
    for k in range(3):
        one = MLP(27, 3, 10, 20, seed=5 + k, layers=2, norm="batch", init="scaled")
        for (name, p), (_, q) in zip(m.state_dict().items(), one.state_dict().items()):
            assert torch.equal(p[k], q[0]), name


def test_scaled_init_starts_near_uniform():
    X = torch.randint(0, 27, (1, 4096, 3))
    Y = torch.randint(0, 27, (1, 4096))
    with torch.no_grad():
        lecture = MLP(27, init="lecture").loss(X, Y).item()
        scaled = MLP(27, init="scaled").loss(X, Y).item()
    assert abs(scaled - math.log(27)) < 0.05  # -ln(1/27) = 3.296
    assert lecture > 10


def test_a_run_builds_its_model_from_the_model_config():
    conf = {"kind": "mlp", "block_size": 4, "emb": 5, "hidden": 6, "norm": "layer", "init": "scaled", "layers": 2}
    m = models.build(conf, 27, seed=3, replicas=2)
    assert isinstance(m, MLP) and (m.block_size, m.emb, m.hidden, m.layers, m.replicas) == (4, 5, 6, 2, 2)
    assert torch.equal(m.C, MLP(27, 4, 5, 6, norm="layer", layers=2, replicas=2, init="scaled", seed=3).C)
    b = models.build({"kind": "bigram", "block_size": 1}, 27, replicas=4)
    assert isinstance(b, Bigram) and b.replicas == 1  # counted: one replica


# -- the MLP's options against a plain reference forward, written out per replica with loops ----------------------


def reference_logits(net: MLP, X: torch.Tensor, train: bool) -> torch.Tensor:
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


@pytest.mark.parametrize("K", [1, 2])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("direct", [False, True])
@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_each_mlp_option_matches_a_plain_reference_forward(layers, direct, norm, K):
    torch.manual_seed(0)
    net = MLP(11, 3, 4, 9, replicas=K, norm=norm, layers=layers, direct=direct, init="scaled", seed=1)
    with torch.no_grad():  # move every parameter off its init (D starts at zero, gains at one)
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    X = torch.randint(0, 11, (K, 20, 3))
    torch.testing.assert_close(net.forward(X, train=False), reference_logits(net, X, False), rtol=1e-4, atol=1e-5)
    expected = reference_logits(net, X, True)  # before forward(train=True) moves the running statistics
    torch.testing.assert_close(net.forward(X, train=True), expected, rtol=1e-4, atol=1e-5)
    names = {n for n, _ in net.named_parameters()}
    assert ("D" in names) == direct and f"W{layers}" in names and f"W{layers + 1}" not in names


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
@pytest.mark.parametrize("K", [1, 3])
def test_evaluate_equals_loss_in_eval_mode(norm, K):
    """evaluate(X, Y) (shared X, no-grad chunks with a partial last one; the 2-D path for norm none) is each
    replica's loss() in eval mode: batch norm uses the running statistics, which it leaves unchanged."""
    V, B, n = 11, 3, 2500  # chunks of at least 1024: 1024 + 1024 + 452
    g = torch.Generator().manual_seed(0)
    model = MLP(V, B, 4, 8, replicas=K, norm=norm, init="lecture", seed=7)
    with torch.no_grad():
        if norm != "none":
            model.gain1.copy_(0.5 + torch.rand(K, 8, generator=g))
            model.shift1.copy_(torch.randn(K, 8, generator=g))
        if norm == "batch":
            model.running_mean1.copy_(3 * torch.randn(K, 8, generator=g))
            model.running_var1.copy_(0.2 + 10 * torch.rand(K, 8, generator=g))
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    X = torch.randint(0, V, (n, B), generator=g)
    Y = torch.randint(0, V, (n,), generator=g)
    with torch.no_grad():
        expected = model.loss(X.expand(K, n, B), Y.expand(K, n), train=False)
    got = model.evaluate(X, Y, chunk=1024)
    assert got.shape == (K,)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for k, v in buffers.items():
        assert torch.equal(dict(model.named_buffers())[k], v), k


@pytest.mark.parametrize(
    "options, opt",
    [
        ({"layers": 3}, "sgd"),
        ({"layers": 2, "direct": True, "norm": "batch"}, "adamw"),
        ({"layers": 2, "dropout": 0.2}, "adamw"),
        *(
            pytest.param(o, opt, marks=pytest.mark.slow)
            for o, opt in [({"layers": 3}, "adamw"), ({"direct": True}, "sgd"), ({"direct": True}, "adamw")]
            + [({"layers": 2, "direct": True, "norm": "batch"}, "sgd"), ({"norm": "layer"}, "sgd")]
            + [({"norm": "layer"}, "adamw")]
        ),
    ],
)
def test_each_mlp_option_trains_on_the_autograd_engine(options, opt, tiny_data):
    net = MLP(len(tiny_data.vocab), 3, 8, 32, init="scaled", replicas=2, **options)
    before = net.evaluate(tiny_data.X["train"], tiny_data.Y["train"])
    engine = engines.make("autograd", net, 32, ADAMW if opt == "adamw" else SGD)
    loop = Loop(steps=400, batch_size=32, schedule=step_schedule([0.01 if opt == "adamw" else 0.1], []), seed=1,
                eval_every=400, checkpoint_every=400)  # fmt: skip
    progress = fit(net, engine, tiny_data, loop)
    after = torch.tensor(progress.evals[-1]["train"])
    assert torch.all(after < before - 0.4), (before, after)


@pytest.mark.parametrize("cls", [MLP, models.WaveNet])
def test_dropout_acts_while_training_only(cls):
    """model.dropout: each tanh output zeroed with probability p and the rest scaled by 1/(1 - p) while training,
    drawn from torch's generator; evaluation is the model without dropout, and p = 0 draws nothing."""
    plain, dropped = cls(27, 8, 4, 64, norm="layer"), cls(27, 8, 4, 64, norm="layer", dropout=0.5)
    X = torch.randint(0, 27, (1, 256, 8))
    assert torch.equal(plain(X), dropped(X))
    x, _ = plain._embedded(X)
    h, kept = plain._layer(1, x, train=True), dropped._layer(1, x, train=True)
    assert torch.allclose(kept[kept != 0], 2 * h[kept != 0])  # the kept ones scaled by 1 / (1 - 0.5)
    assert 0.45 < (kept == 0).float().mean() < 0.55
    torch.manual_seed(0)
    a = dropped(X, train=True)
    torch.manual_seed(0)
    assert torch.equal(a, dropped(X, train=True))  # the same draws repeat it
    assert not torch.equal(a, plain(X, train=True))
    state = torch.get_rng_state()
    plain(X, train=True)
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        cls(27, 8, 4, 16, dropout=1.0)


# -- the bigram ---------------------------------------------------------------------------------------------------


def test_bigram_equals_direct_counts():
    words = ["ab", "abc", "b", "ca", "cab", "bb"]
    vocab = Vocab.from_words(words)
    X, Y = build_dataset(words, vocab, 1)
    m = Bigram(len(vocab))
    m.fit(X, Y)
    N = torch.zeros(len(vocab), len(vocab))
    for w in words:
        chs = ["."] + list(w) + ["."]
        for a, b in zip(chs, chs[1:]):
            N[0 if a == "." else vocab.stoi[a], 0 if b == "." else vocab.stoi[b]] += 1
    P = (N + 1) / (N + 1).sum(1, keepdim=True)
    nll = -sum(
        math.log(P[0 if a == "." else vocab.stoi[a], 0 if b == "." else vocab.stoi[b]])
        for w in words
        for a, b in zip(["."] + list(w), list(w) + ["."])
    ) / len(Y)
    assert torch.equal(m.counts, N)
    assert m.evaluate(X, Y).item() == pytest.approx(nll, rel=1e-6)
    again = Bigram(len(vocab))
    again.load_state_dict(m.state_dict())
    assert torch.equal(again.evaluate(X, Y), m.evaluate(X, Y))  # the probabilities come back from the counts


# -- the families ---------------------------------------------------------------------------------------------------

FAMILY_CONFIGS = {  # small versions of each family's config
    "mlp": {"kind": "mlp", "block_size": 3, "emb": 4, "hidden": 8, "init": "scaled", "norm": "batch", "layers": 2},
    "wavenet": {"kind": "wavenet", "block_size": 4, "emb": 4, "hidden": 8, "init": "scaled", "norm": "batch"},
    "rnn": {"kind": "rnn", "block_size": 6, "emb": 4, "hidden": 8},
    "gru": {"kind": "gru", "block_size": 6, "emb": 4, "hidden": 8},
    "bow": {"kind": "bow", "block_size": 6, "emb": 4, "hidden": 8},
    "transformer": {"kind": "transformer", "block_size": 6, "emb": 8, "n_layer": 2, "n_head": 2, "dropout": 0.0},
}
NAMES = ["emma", "olivia", "ava", "isabella", "sophia", "charlotte", "mia", "amelia", "harper", "evelyn"]


@pytest.mark.parametrize("kind", ["rnn", "gru", "bow", "transformer"])
def test_a_sequence_models_rows_score_each_target_as_its_prefix_does(kind):
    """Evaluating the rows (one forward per row, every position at once; a word longer than the row adds sliding
    rows) gives each target the probability the model gives it from the word's prefix alone, as sampling asks:
    the models are causal and the rows' targets line up with the contexts' (data.build_sequences)."""
    from makemore.data import build_sequences

    vocab = Vocab.from_words(NAMES)
    m = models.build(FAMILY_CONFIGS[kind], len(vocab), seed=3)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    X, Y = build_sequences(NAMES, vocab, 6)  # "isabella" and "charlotte" need more than one row
    nll, n = 0.0, 0
    for w in NAMES:
        tokens = [0, *vocab.encode(w), 0]
        for t in range(1, len(tokens)):
            p = m.next_char_probs(torch.tensor(tokens[:t]).view(1, 1, -1))[0, 0, tokens[t]]
            nll, n = nll - math.log(p), n + 1
    assert n == len(build_dataset(NAMES, vocab, 3)[1]) == int((Y >= 0).sum())
    assert m.evaluate(X, Y).item() == pytest.approx(nll / n, rel=1e-5)


@pytest.mark.parametrize("kind", ["rnn", "gru", "transformer"])
def test_a_sequence_models_dropout_acts_while_training_only(kind):
    """model.dropout of the sequence families: evaluation is the model without it, training draws its masks from
    torch's generator (the same draws repeat a step), and p = 0 draws nothing."""
    X = torch.randint(0, 27, (1, 32, 6))
    plain = models.build(FAMILY_CONFIGS[kind], 27, seed=3)
    dropped = models.build({**FAMILY_CONFIGS[kind], "dropout": 0.3}, 27, seed=3)
    with torch.no_grad():
        assert torch.equal(plain(X), dropped(X))
        torch.manual_seed(0)
        a = dropped(X, train=True)
        torch.manual_seed(0)
        assert torch.equal(a, dropped(X, train=True)) and not torch.equal(a, plain(X, train=True))
        state = torch.get_rng_state()
        plain(X, train=True)
        assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        models.build({**FAMILY_CONFIGS[kind], "dropout": 1.0}, 27)


def part5_wavenet(m: MLP, X: torch.Tensor, train: bool) -> torch.Tensor:
    """makemore part 5's layers, written out: Embedding, FlattenConsecutive(2), Linear(bias=False), BatchNorm1d
    over (batch, time), Tanh, level after level, then the output Linear; one replica."""
    x = m.C[0][X[0]]  # (N, T, E)
    for i in range(1, m.layers + 1):
        N, T, C = x.shape
        x = x.reshape(N, T // 2, 2 * C)
        if x.shape[1] == 1:
            x = x.squeeze(1)
        h = x @ getattr(m, f"W{i}")[0]
        dims = (0, 1) if h.dim() == 3 else 0
        if train:
            mean, var = h.mean(dims, keepdim=True), h.var(dims, keepdim=True, unbiased=False)
        else:
            mean, var = getattr(m, f"running_mean{i}")[0], getattr(m, f"running_var{i}")[0]
        x = torch.tanh((h - mean) / torch.sqrt(var + 1e-5) * getattr(m, f"gain{i}")[0] + getattr(m, f"shift{i}")[0])
    return (x @ m.Wout[0] + m.bout[0]).unsqueeze(0)


def test_wavenet_is_makemore_part_5s_model():
    from makemore.models import WaveNet

    part5 = WaveNet(27)  # block 8, emb 24, hidden 128, batch norm: the lecture's final model
    assert part5.layers == 3 and part5.num_params() == 76579  # the lecture's count: no bias before a batch norm
    m = WaveNet(11, block_size=8, emb=3, hidden=5, seed=1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
        X = torch.randint(0, 11, (1, 20, 8))
        torch.testing.assert_close(m.forward(X, train=False), part5_wavenet(m, X, False), rtol=1e-4, atol=1e-5)
        expected = part5_wavenet(m, X, True)
        torch.testing.assert_close(m.forward(X, train=True), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="power of 2"):
        WaveNet(27, block_size=6)


@pytest.mark.parametrize("kind", list(FAMILY_CONFIGS))
def test_replica_k_of_every_family_is_the_model_seeded_seed_plus_k(kind):
    many = models.build(FAMILY_CONFIGS[kind], 27, seed=5, replicas=3)
    for k in (0, 2):
        one = models.build(FAMILY_CONFIGS[kind], 27, seed=5 + k)
        X = torch.randint(0, 27, (1, 7, FAMILY_CONFIGS[kind]["block_size"]))
        with torch.no_grad():
            torch.testing.assert_close(many.forward(X.expand(3, -1, -1))[k], one.forward(X)[0])
    assert many.num_params() == one.num_params()


@pytest.mark.parametrize(
    "kind", [k if k in ("wavenet", "bow") else pytest.param(k, marks=pytest.mark.slow) for k in FAMILY_CONFIGS]
)
def test_every_family_trains_on_the_autograd_engine_and_samples(kind, words_file):
    from makemore.data import load
    from makemore.sample import generate

    conf = FAMILY_CONFIGS[kind]
    data = load(str(words_file), [0.8, 0.1, 0.1], 42, conf["block_size"], layout=models.inputs(kind))
    assert data.examples() == load(str(words_file), [0.8, 0.1, 0.1], 42, 3).examples()  # the same targets
    model = models.build(conf, len(data.vocab), replicas=2)
    before = model.evaluate(data.X["train"], data.Y["train"])
    engine = engines.make("autograd", model, 32, ADAMW)
    loop = Loop(steps=200, batch_size=32, schedule=step_schedule([0.01], []), seed=1, eval_every=200,
                checkpoint_every=200)  # fmt: skip
    progress = fit(model, engine, data, loop)
    after = torch.tensor(progress.evals[-1]["train"])
    assert torch.all(after < before - 0.3), (before, after)
    words = generate(model, data.vocab, 8, seed=1, prefix="ma")
    assert len(words) == 8 and all(w.startswith("ma") for w in words)
    assert generate(model, data.vocab, 8, seed=1, prefix="ma") == words  # the sampling seed decides
