"""train.ensemble: the K replicas as one model, scored and sampled by the mean of their probabilities."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import FAMILIES, QUICK, events, metrics, run_cli, run_dirs, run_module
from test_models import FAMILY_CONFIGS
from test_run import assert_resumes_bit_for_bit

from makemore import api, models
from makemore.config import ConfigError
from makemore.models.base import IGNORE
from makemore.sample import generate


def reference_mixture_loss(model, X, Y) -> float:
    """The ensemble's mean loss, written out: each target's probability averaged over the replicas, then -log."""
    K = model.replicas
    with torch.no_grad():
        probs = torch.softmax(model.forward(X.unsqueeze(0).expand(K, *X.shape)).double(), -1).mean(0)
    keep = Y != IGNORE
    return float(-probs[keep].gather(-1, Y[keep].unsqueeze(-1)).log().mean())


@pytest.mark.parametrize("kind", list(FAMILY_CONFIGS))
def test_the_ensembles_loss_is_that_of_its_replicas_mean_probability(kind):
    conf = FAMILY_CONFIGS[kind]
    model = models.build(conf, 27, seed=3, replicas=3, ensemble=True)
    for p in model.parameters():  # trained-looking replicas, far apart
        p.data.add_(0.5 * torch.randn_like(p))
    g = torch.Generator().manual_seed(0)
    X = torch.randint(0, 27, (50, conf["block_size"]), generator=g)
    Y = torch.randint(0, 27, X.shape if model.inputs == "sequence" else (50,), generator=g)
    if model.inputs == "sequence":
        Y[:, -2:] = IGNORE  # rows with fewer targets than positions
    members, mixed = model.evaluate_ensemble(X, Y, chunk=16)
    assert mixed.shape == (1,) and members.shape == (3,)
    assert mixed.item() == pytest.approx(reference_mixture_loss(model, X, Y), rel=1e-5)
    torch.testing.assert_close(members, model.evaluate(X, Y))
    assert mixed.item() < members.mean().item()  # Jensen: strictly, the replicas disagree


def test_an_ensemble_of_equal_replicas_scores_as_one_of_them():
    conf = FAMILY_CONFIGS["mlp"]
    model = models.build(conf, 27, seed=3, replicas=2, ensemble=True)
    with torch.no_grad():
        for p in model.parameters():
            p[1] = p[0]
    X, Y = torch.randint(0, 27, (40, 3)), torch.randint(0, 27, (40,))
    members, mixed = model.evaluate_ensemble(X, Y)
    assert mixed.item() == pytest.approx(members[0].item(), rel=1e-6)


def test_an_ensemble_samples_from_the_mean_of_its_replicas():
    from makemore.data import Vocab

    vocab = Vocab.from_words(["ab", "ba"])
    model = models.build(FAMILY_CONFIGS["mlp"] | {"block_size": 2}, len(vocab), seed=1, replicas=2, ensemble=True)
    with torch.no_grad():  # replica 0 always ends the word after an "a", replica 1 always after a "b"
        for p in model.parameters():
            p.zero_()
        model.bout[0] = torch.tensor([0.0, -50.0, -50.0])
        model.bout[0, vocab.stoi["a"]] = 0.0
        model.bout[1] = torch.tensor([0.0, -50.0, -50.0])
        model.bout[1, vocab.stoi["b"]] = 0.0
    assert all(set(w) <= {"a"} for w in generate(model, vocab, 50, seed=1, replica=0))
    assert all(set(w) <= {"b"} for w in generate(model, vocab, 50, seed=1, replica=1))
    words = generate(model, vocab, 200, seed=1, replica=None)
    assert any({"a", "b"} <= set(w) for w in words)  # the replicas' letters mixed within a word


def test_ensemble_needs_two_replicas_and_a_trained_family():
    with pytest.raises(ConfigError, match=r"train.ensemble=true needs train.replicas >= 2.*got 1"):
        api.setup(api.compose(["train.ensemble=true"]))
    with pytest.raises(ConfigError, match="train.ensemble: model=bigram is counted"):
        api.setup(api.compose(["train.ensemble=true", "train.replicas=2", "model=bigram"]))


@pytest.mark.slow
def test_an_ensemble_run_reports_the_ensemble_and_its_members(tmp_path, words_file):
    r = run_cli(*QUICK, f"data.path={words_file}", "train.replicas=3", "train.ensemble=true", "train.eval_test=true",
                cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    (run,) = run_dirs(tmp_path)
    m = metrics(run)
    assert m["ensemble"] is True and m["replicas"] == 3 and m["dev_loss_std"] is None
    model, vocab, state = api.load_run(run)
    assert m["params"] == 3 * model.num_params()  # the ensemble's parameters: all its members'
    for split in ("train", "dev", "test"):
        members = m["replica_losses"][split]
        assert len(members) == 3 and m[f"{split}_loss"] < sum(members) / 3
    assert model.ensemble
    from makemore.data import load

    data = load(str(words_file), [0.8, 0.1, 0.1], 42, model.block_size)
    assert reference_mixture_loss(model, data.X["dev"], data.Y["dev"]) == pytest.approx(m["dev_loss"], rel=1e-5)
    acc = events(run)
    last = {t: acc.Scalars(t)[-1].value for t in ("loss/dev", "loss/dev_members", "replicas/dev_members_2")}
    assert last["loss/dev"] == pytest.approx(m["dev_loss"], rel=1e-6)
    assert last["loss/dev_members"] == pytest.approx(sum(m["replica_losses"]["dev"]) / 3, rel=1e-6)
    s = run_module("makemore.sample", str(run), "-n", "5", "--prefix", "ma", cwd=tmp_path)
    assert s.returncode == 0, s.stderr
    assert len([w for w in s.stdout.splitlines() if w.startswith("ma")]) == 5


@pytest.mark.slow
def test_a_transformer_ensemble_resumes_after_sigkill_bit_for_bit(tmp_path, words_file):
    """A sequence family as an ensemble (dropout on): killed, resumed, the same ensemble and members."""
    steps = 240
    args = (*FAMILIES["transformer"], "optimizer=adamw", "schedule.lrs=[0.003]", "schedule.milestones=[]",
            "samples=2", f"train.steps={steps}", f"train.eval_every={steps // 3}",
            f"train.checkpoint_every={steps // 30}", "train.replicas=2", "train.ensemble=true",
            f"data.path={words_file}")  # fmt: skip
    assert_resumes_bit_for_bit(tmp_path, args, steps)
    a, b = metrics(tmp_path / "full"), metrics(tmp_path / "cut")
    assert a["ensemble"] and a["replica_losses"] == b["replica_losses"]
    assert math.isfinite(a["dev_loss"]) and a["dev_loss"] < sum(a["replica_losses"]["dev"]) / 2
