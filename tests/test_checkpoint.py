"""Checkpoints (fast, in process): plain dicts that load with weights_only=True, old checkpoints, the resume checks."""

from __future__ import annotations

import pickle

import pytest
import torch

from makemore import checkpoint
from makemore.config import ConfigError
from makemore.data import Dataset, Vocab, build_dataset
from makemore.engine import make
from makemore.models import MLP
from makemore.schedule import step_schedule
from makemore.train import Loop, Progress, fit

WORDS = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "amelia", "harper"] * 2


def tiny_run(steps: int = 40):
    vocab = Vocab.from_words(WORDS)
    X, Y = build_dataset(WORDS, vocab, 3)
    data = Dataset(
        vocab=vocab,
        words={s: WORDS for s in ("train", "dev", "test")},
        X=dict.fromkeys(("train", "dev", "test"), X),
        Y=dict.fromkeys(("train", "dev", "test"), Y),
        source="test",
    )
    model = MLP(len(vocab), block_size=3, emb=4, hidden=8, init="scaled", seed=1)
    engine = make("fast", model, 8, {"name": "sgd", "momentum": 0.0, "nesterov": False, "weight_decay": 0.0})
    loop = Loop(
        steps=steps, batch_size=8, schedule=step_schedule([0.1], []), seed=1, eval_every=20, checkpoint_every=20
    )
    progress = fit(model, engine, data, loop)
    conf = {
        "data": {"path": "w"},
        "model": {
            "kind": "mlp",
            "block_size": 3,
            "emb": 4,
            "hidden": 8,
            "norm": "none",
            "init": "scaled",
            "layers": 1,
            "direct": False,
        },
        "schedule": {"name": "step", "lrs": [0.1], "milestones": []},
        "optimizer": {"name": "sgd", "momentum": 0.0, "nesterov": False, "weight_decay": 0.0},
        "seed": 1,
        "train": {"steps": steps, "replicas": 1, "batch_size": 8},
    }
    return model, data, conf, progress


def same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_checkpoint_is_plain_data_with_a_format(tmp_path):
    model, data, conf, progress = tiny_run()
    path = tmp_path / checkpoint.FILENAME
    checkpoint.save(path, checkpoint.run_state(model, data, conf, progress))
    state = torch.load(path, weights_only=True)  # no pickled classes: no code runs on load
    assert state["format"] == checkpoint.FORMAT and state["step"] == 40 and state["vocab"] == data.vocab.itos
    again = Progress.from_state(checkpoint.load(tmp_path)["progress"])
    assert again.step == 40 and torch.equal(again.batch_rng, progress.batch_rng)
    assert [e["step"] for e in again.evals] == [20, 40] and again.initial_loss == progress.initial_loss
    assert torch.equal(again.minibatch_losses(), progress.minibatch_losses())


def test_a_checkpoint_written_before_formats_still_loads(tmp_path):
    """Format 1 pickled the Progress dataclass (no `format` key); it loads, converted, without weights_only=False."""
    model, data, conf, progress = tiny_run()
    old = Progress(step=40, seconds=1.5, batch_rng=progress.batch_rng, losses=progress.losses, evals=progress.evals)
    old.__dict__["lrs"] = [0.1] * 40  # Progress as format 1 pickled it: with `lrs`, without `initial_loss`
    del old.__dict__["initial_loss"]
    torch.save(
        {
            "model": model.state_dict(),
            "vocab": data.vocab.itos,
            "config": conf,
            "progress": old,
            "step": 40,
            "words": data.words,
        },
        tmp_path / checkpoint.FILENAME,
    )
    with pytest.raises(pickle.UnpicklingError):  # weights_only refuses the pickled class
        torch.load(tmp_path / checkpoint.FILENAME, weights_only=True)
    state = checkpoint.load(tmp_path)
    assert state["format"] == checkpoint.FORMAT and isinstance(state["progress"], dict)
    p = Progress.from_state(state["progress"])
    assert (p.step, p.seconds, p.initial_loss) == (40, 1.5, None) and torch.equal(p.batch_rng, progress.batch_rng)


def test_a_newer_or_damaged_checkpoint_is_one_clear_error(tmp_path):
    model, data, conf, progress = tiny_run()
    state = checkpoint.run_state(model, data, conf, progress)
    checkpoint.save(tmp_path / "new.pt", {**state, "format": checkpoint.FORMAT + 1})
    with pytest.raises(ConfigError, match="newer than this makemore reads"):
        checkpoint.load(tmp_path / "new.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="damaged checkpoint"):
        checkpoint.load(tmp_path / "bad.pt")


def _resume(tmp_path, conf, vocab, steps=None):
    model, data, conf0, progress = tiny_run()
    checkpoint.save(tmp_path / checkpoint.FILENAME, checkpoint.run_state(model, data, conf0, progress))
    fresh = MLP(len(data.vocab), block_size=3, emb=4, hidden=8, init="scaled", seed=99)
    return checkpoint.resume(tmp_path / checkpoint.FILENAME, fresh, conf, vocab), fresh, model


def test_resume_continues_from_the_checkpoint(tmp_path):
    _, data, conf, _ = tiny_run()
    progress, fresh, trained = _resume(tmp_path, conf, data.vocab.itos)
    assert progress.step == 40 and all(
        torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), trained.state_dict().values())
    )


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda c: c["model"].update(hidden=9), "written with model.hidden=8, this run has model.hidden=9"),
        (lambda c: c.update(seed=2), "with seed=1, this run has seed=2"),
        (lambda c: c["train"].update(batch_size=16), "with train.batch_size=8, this run has train.batch_size=16"),
        (lambda c: c["train"].update(steps=10), "at step 40, beyond train.steps=10"),
        # a cosine schedule's lr depends on train.steps: a longer run would change the past's lrs
        (
            lambda c: c.update(schedule={"name": "cosine", "lr": 0.1}),
            "with schedule.name=step, this run has schedule.name=cosine",
        ),
    ],
)
def test_resume_refuses_another_trajectory(tmp_path, change, needle):
    _, data, conf, _ = tiny_run()
    change(conf)
    with pytest.raises(ConfigError, match=needle):
        _resume(tmp_path, conf, data.vocab.itos)


def test_resume_refuses_a_cosine_run_with_other_steps(tmp_path):
    model, data, conf, progress = tiny_run()
    conf["schedule"] = {"name": "cosine", "lr": 0.1, "min_lr": 0.001, "warmup": 0}
    checkpoint.save(tmp_path / checkpoint.FILENAME, checkpoint.run_state(model, data, conf, progress))
    longer = {**conf, "train": {**conf["train"], "steps": 80}}
    with pytest.raises(ConfigError, match="written with train.steps=40, this run has train.steps=80"):
        checkpoint.resume(tmp_path / checkpoint.FILENAME, model, longer, data.vocab.itos)
    step = {**conf, "schedule": {"name": "step", "lrs": [0.1], "milestones": []}}
    checkpoint.save(tmp_path / "step.pt", checkpoint.run_state(model, data, step, progress))
    resumed = checkpoint.resume(tmp_path / "step.pt", model, {**step, "train": longer["train"]}, data.vocab.itos)
    assert resumed.step == 40  # a step schedule's lrs do not depend on train.steps


def test_resume_refuses_another_vocabulary(tmp_path):
    _, data, conf, _ = tiny_run()
    with pytest.raises(ConfigError, match="different vocabulary"):
        _resume(tmp_path, conf, data.vocab.itos + ["z"])


def test_resume_without_a_checkpoint_is_refused(tmp_path):
    """resume=true where there is nothing to continue is bad input, not a fresh run."""
    model, data, conf, _ = tiny_run()
    with pytest.raises(ConfigError, match=r"resume=true: there is no checkpoint to continue, .*checkpoint\.pt does "):
        checkpoint.resume(tmp_path / checkpoint.FILENAME, model, conf, data.vocab.itos)


def test_resume_names_the_changed_key_and_lets_evaluation_keys_change(tmp_path):
    model, data, conf, progress = tiny_run()
    checkpoint.save(tmp_path / checkpoint.FILENAME, checkpoint.run_state(model, data, conf, progress))
    other = {**conf, "model": {**conf["model"], "bn_eval": "running" if conf["model"].get("bn_eval") else "x"}}
    assert checkpoint.resume(tmp_path / checkpoint.FILENAME, model, other, data.vocab.itos).step == 40
    for key, value in (("emb", 5), ("norm", "batch"), ("direct", True)):
        changed = {**conf, "model": {**conf["model"], key: value}}
        with pytest.raises(ConfigError, match=rf"this run has model\.{key}={value}; resume with the same model\.{key}"):
            checkpoint.resume(tmp_path / checkpoint.FILENAME, model, changed, data.vocab.itos)


def test_a_checkpoint_from_before_the_optimizer_group_resumes(tmp_path):
    """Its config had train.weight_decay and no model.layers, model.direct or optimizer: it reads as SGD."""
    model, data, new, progress = tiny_run()
    sgd = {"name": "sgd", "momentum": 0.0, "nesterov": False, "weight_decay": 0.001}
    new["optimizer"] = sgd
    old = {k: v for k, v in new.items() if k != "optimizer"}
    old["model"] = {k: v for k, v in new["model"].items() if k not in ("layers", "direct")}
    old["train"] = {**new["train"], "weight_decay": 0.001}
    checkpoint.save(tmp_path / checkpoint.FILENAME, checkpoint.run_state(model, data, old, progress))
    fresh = MLP(len(data.vocab), block_size=3, emb=4, hidden=8, init="scaled", seed=99)
    assert checkpoint.resume(tmp_path / checkpoint.FILENAME, fresh, new, data.vocab.itos, "fast").step == 40
    other = {**new, "optimizer": {**sgd, "weight_decay": 0.0}}
    with pytest.raises(ConfigError, match="optimizer.weight_decay=0.001, this run has optimizer.weight_decay=0.0"):
        checkpoint.resume(tmp_path / checkpoint.FILENAME, fresh, other, data.vocab.itos, "fast")
    with pytest.raises(ConfigError, match="trained by the fast engine.*train.engine=fast"):
        checkpoint.resume(tmp_path / checkpoint.FILENAME, fresh, new, data.vocab.itos, "autograd")
