"""The model: the exact lecture init, the scaled init, and the fast step against autograd."""

from __future__ import annotations

import math

import pytest
import torch

from makemore.data import Vocab, build_dataset
from makemore.model import MLP, Bigram, build
from makemore.schedule import step_schedule
from makemore.step import FastStep


def test_lecture_init_is_the_lecture_recipe():
    g = torch.Generator().manual_seed(2147483647)
    C = torch.randn((27, 10), generator=g)
    W1 = torch.randn((30, 200), generator=g)
    b1 = torch.randn(200, generator=g)
    W2 = torch.randn((200, 27), generator=g)
    b2 = torch.randn(27, generator=g)
    m = build("mlp", 27, block_size=3, emb=10, hidden=200, init="lecture", seed=2147483647)
    for name, ref in zip(("C", "W1", "b1", "W2", "b2"), (C, W1, b1, W2, b2)):
        assert torch.equal(m.params[name][0], ref), name
    assert m.num_params() == 11897


def test_replica_k_is_seeded_with_seed_plus_k():
    m = build("mlp", 27, block_size=3, emb=10, hidden=20, seed=5, replicas=3)
    for k in range(3):
        one = build("mlp", 27, block_size=3, emb=10, hidden=20, seed=5 + k)
        for name in m.params:
            assert torch.equal(m.params[name][k], one.params[name][0]), name


def test_scaled_init_starts_near_uniform():
    X = torch.randint(0, 27, (1, 4096, 3))
    Y = torch.randint(0, 27, (1, 4096))
    lecture = build("mlp", 27, block_size=3, emb=10, hidden=200, init="lecture").loss(X, Y).item()
    scaled = build("mlp", 27, block_size=3, emb=10, hidden=200, init="scaled").loss(X, Y).item()
    assert abs(scaled - math.log(27)) < 0.05  # -ln(1/27) = 3.296
    assert lecture > 10


def autograd_step(m: MLP, X, Y, lr, wd):
    """One plain SGD step through autograd: the reference the fast step must equal."""
    params = {k: v.detach().clone().requires_grad_(True) for k, v in m.params.items()}
    loss = m.loss(X, Y, params, train=True)
    loss.sum().backward()
    with torch.no_grad():
        for k, p in params.items():
            g = p.grad + (wd * p if k in MLP.DECAYED else 0)
            m.params[k].copy_(p - lr * g)
    return loss.detach()


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
@pytest.mark.parametrize("K", [1, 3])
# wd 1.0 decays by c = 1 - lr wd = 0.7, which the step undoes for the biases by dividing them by c first;
# wd 1 / 0.3 makes c = 0, where it keeps them aside instead
@pytest.mark.parametrize("wd", [0.0, 0.01, 1.0, 1 / 0.3])
def test_fast_step_equals_autograd(norm, K, wd):
    torch.manual_seed(0)
    V, B, E, H, N = 11, 4, 5, 7, 16
    fast = MLP(V, B, E, H, replicas=K, norm=norm).init_("scaled", list(range(K)))
    ref = MLP(V, B, E, H, replicas=K, norm=norm)
    ref.load_state_dict(fast.state_dict())
    X = torch.randint(0, V, (K, N, B))
    Y = torch.randint(0, V, (K, N))
    step = FastStep(fast, N, wd)
    rows, targets = step.batches(X.view(K * N, B), Y.view(K * N), torch.arange(K * N).view(1, K, N))
    picked = torch.empty_like(targets[0], dtype=torch.float)
    step(rows[0], targets[0], 0.3, picked)
    ref_loss = autograd_step(ref, X, Y, 0.3, wd)
    torch.testing.assert_close(-picked.view(K, N).mean(1), ref_loss, rtol=1e-5, atol=1e-6)
    for name in fast.params:
        torch.testing.assert_close(fast.params[name], ref.params[name], rtol=1e-5, atol=1e-6, msg=name)
    for name in fast.buffers:
        torch.testing.assert_close(fast.buffers[name], ref.buffers[name], msg=name)


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_fast_training_tracks_autograd_training(norm):
    """300 steps of the lecture's model on real contexts: same trajectory to float tolerance."""
    words = ["emma", "olivia", "ava", "isabella", "sophia", "charlotte", "mia", "amelia", "harper", "evelyn"] * 3
    vocab = Vocab.from_words(words)
    Xtr, Ytr = build_dataset(words, vocab, 3)
    fast = build("mlp", len(vocab), block_size=3, emb=10, hidden=50, init="scaled", norm=norm, replicas=2)
    ref = MLP(len(vocab), 3, 10, 50, replicas=2, norm=norm)
    ref.load_state_dict(fast.state_dict())
    step = FastStep(fast, 32, 0.001)
    g = torch.Generator().manual_seed(1)
    ix = torch.randint(0, len(Ytr), (300, 2, 32), generator=g)
    rows, targets = step.batches(Xtr, Ytr, ix)
    lr = step_schedule([0.2, 0.05], [150])
    picked = torch.empty(300, 2, 32, 1)
    ref_losses = []
    for i in range(300):
        step(rows[i], targets[i], lr(i), picked[i])
        ref_losses.append(autograd_step(ref, Xtr[ix[i]], Ytr[ix[i]], lr(i), 0.001))
    torch.testing.assert_close(-picked.view(300, 2, 32).mean(2), torch.stack(ref_losses), rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(fast.flat, ref.flat, rtol=1e-3, atol=1e-4)
    assert ref_losses[-1].mean() < ref_losses[0].mean() - 0.5  # it did learn


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
