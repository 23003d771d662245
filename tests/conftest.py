"""Shared helpers: the lecture's names.txt (skipped when ../shared is absent), a small word file, and
running the real commands in a subprocess from a scratch working directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
NAMES = ROOT.parent / "shared" / "data" / "names.txt"
CONF = ROOT / "conf"


@pytest.fixture(autouse=True)
def one_thread():
    """In-process tests use tiny tensors: one thread runs them fastest, and a second one contending for a busy core can
    make a run of many small operations 10-50x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def names_txt() -> Path:
    if not NAMES.is_file():
        pytest.skip("../shared/data/names.txt is absent")
    return NAMES


@pytest.fixture(scope="session")
def words_file(tmp_path_factory) -> Path:
    """600 names from the embedded data: small enough for quick CLI runs, large enough for splits."""
    from makemore.data import embedded_names

    path = tmp_path_factory.mktemp("data") / "words.txt"
    path.write_text("\n".join(embedded_names()[::54][:600]) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_data(words_file):
    """words_file loaded as a run loads it (block size 3), for in-process training tests."""
    from makemore.data import load

    return load(str(words_file), [0.8, 0.1, 0.1], 42, 3)


def run_module(module: str, *args: str, cwd: Path, timeout: float = 240, env=None) -> subprocess.CompletedProcess:
    """`python -m module args` as a user would type it, in `cwd`."""
    e = dict(os.environ, HYDRA_FULL_ERROR="", PYTHONWARNINGS="ignore")
    e.pop("HYDRA_FULL_ERROR")
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=e
    )


def run_cli(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return run_module("makemore.run", *args, cwd=cwd, **kw)


def run_dirs(cwd: Path):
    return sorted((cwd / "outputs" / "runs").iterdir())


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


# each family small: overrides for CLI runs
FAMILIES = {
    "wavenet": ("model=wavenet", "model.block_size=4", "model.emb=4", "model.hidden=8"),
    "rnn": ("model=rnn", "model.emb=4", "model.hidden=8"),
    "gru": ("model=gru", "model.emb=4", "model.hidden=8", "model.dropout=0.1"),
    "bow": ("model=bow", "model.emb=4", "model.hidden=8"),
    "transformer": ("model=transformer", "model.emb=8", "model.n_layer=2", "model.n_head=2", "model.dropout=0.1"),
}

# small, fast settings for CLI runs: a tiny model on the small word file
QUICK = (
    "model.hidden=16",
    "model.emb=4",
    "train.steps=300",
    "train.eval_every=100",
    "train.checkpoint_every=100",
    "samples=5",
)


def events(run: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="session")
def grid_2x2(tmp_path_factory, words_file):
    cwd = tmp_path_factory.mktemp("grid2x2")
    r = run_cli(
        "-m",
        "model.emb=2,4",
        "model.hidden=8,16",
        "train.steps=200",
        "train.eval_every=100",
        "train.checkpoint_every=200",
        "samples=2",
        f"data.path={words_file}",
        cwd=cwd,
    )
    assert r.returncode == 0, r.stderr
    (sweep,) = sorted((cwd / "outputs" / "multirun").iterdir())
    return sweep, r
