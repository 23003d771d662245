"""The Python API: the CLI's steps as plain functions, for a notebook or a script.

from makemore import api
cfg = api.compose(["model.hidden=300", "train.steps=20000"])   # the same overrides as the command line
run = api.setup(cfg)                 # data, model, engine, device, threads: the CLI's own set-up
progress = api.train(run)            # the CLI's loop, without its TensorBoard and checkpoint hooks
api.evaluate(run, "dev")             # the model's loss on a split
api.sample(run.model, run.data.vocab, 10)
model, vocab, state = api.load_run("outputs/runs/<run dir>")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .assemble import Setup, setup
from .train import Hooks, Progress, fit
from .train import evaluate as _evaluate


def compose(overrides: Sequence[str] = ()):
    """The run's config from the command line's overrides, through Hydra's compose API (conf/ and the presets, the
    schema's type checks included); the range checks run in setup."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from .hydra_app import CONF, register_configs, register_resolvers

    register_configs()
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def train(run: Setup, hooks: Hooks | None = None, progress: Progress | None = None) -> Progress:
    """Train the set-up run (setup's threads, the CLI's loop); returns its progress (losses, evaluations)."""
    return fit(run.model, run.engine, run.data, run.loop, hooks, progress)


def evaluate(run: Setup, split: str = "dev") -> list[float]:
    """Each replica's mean loss over every example of `split` (train, dev or test); a train.ensemble run's one
    loss, that of the replicas' mean probability."""
    return _evaluate(run.model, run.data, (split,), threads=run.eval_threads)[split].tolist()


def sample(model, vocab, n: int = 10, seed: int = 2147483647 + 10, temperature: float = 1.0, prefix: str = ""):
    """n words drawn from `model` (replica 0, or a train.ensemble run's whole ensemble), as `python -m
    makemore.sample` draws them."""
    from .sample import generate

    return generate(model, vocab, n, seed, temperature, prefix, replica=None)


def load_run(path: str | Path):
    """A finished (or interrupted) run from its dir or checkpoint file: (model, vocabulary, checkpoint dict)."""
    from . import checkpoint
    from .models import from_checkpoint

    state = checkpoint.load(path)
    model, vocab = from_checkpoint(state)
    return model, vocab, state


__all__ = ["compose", "setup", "train", "evaluate", "sample", "load_run", "Setup"]
