"""A run's checkpoint: atomic save, safe load, and the checks before a run resumes from one.

A checkpoint is a plain dict of tensors and builtins, loadable with `torch.load(weights_only=True)`:

    format    FORMAT (absent in checkpoints written before formats were recorded: those load too)
    model     the model module's state_dict (format 2's fast-engine {"flat": ...} is unpacked on load)
    vocab     the vocabulary (index 0 is the boundary)
    config    the run's resolved config as a dict
    progress  train.Progress.state(): step, step seconds, batch RNG, minibatch losses, evaluations, the
              engine's optimizer state at the last checkpoint (momentum buffers, AdamW moments and step), and the
              diagnoses' warnings and health state
    engine    which engine trained it (engine.resolve's answer: fast, autograd or count); absent: fast
    step      progress["step"], for a quick look
    words     the words of each split (sampling marks names as seen in training or new)
    overrides the command-line overrides of the run that wrote it (`resume=PATH` replays them); absent before
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError

log = logging.getLogger("makemore")

FILENAME = "checkpoint.pt"
# 1 (unrecorded): progress was a pickled train.Progress; 2: plain dicts, the fast engine's model as one flat
# tensor; 3: every model as its module's state_dict
FORMAT = 3

# what must match for a resumed run to continue the same trajectory
COMPARED_ON_RESUME = ("data", "model", "schedule", "seed", "train.replicas", "train.batch_size", "optimizer")
# keys under those that only change how the run is evaluated, not its trajectory: they may change on resume
EVALUATION_ONLY = ("model.bn_eval",)


def run_state(
    model, data, conf: dict[str, Any], progress, engine: str = "fast", overrides: list[str] | None = None
) -> dict[str, Any]:
    """The checkpoint of a run at `progress`: its model, data (vocabulary and words), resolved config, the
    engine that trains it (engine.resolve's answer) and the command line's overrides."""
    return {
        "format": FORMAT,
        "engine": engine,
        "model": model.state_dict(),
        "vocab": data.vocab.itos,
        "config": conf,
        "progress": progress.state(),
        "step": progress.step,
        "words": data.words,
        "overrides": list(overrides or []),
    }


def save(path: Path | str, state: dict[str, Any]) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over the old one, so a
    kill at any moment leaves either the previous checkpoint or the new one, never half of one (the temporary
    file a killed writer left goes with the next save)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would hide checkpoints from other users
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for stale in path.parent.glob(path.name + ".*.tmp"):  # a killed process's half-written one (SIGKILL)
        stale.unlink(missing_ok=True)


def load(path: Path | str) -> dict[str, Any]:
    """Load a checkpoint (a file, or a run dir holding checkpoint.pt) onto the CPU, without running any
    pickled code. A checkpoint from before formats were recorded is converted to the current format."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise ConfigError(
            f"no checkpoint: {path} does not exist (a run dir holds {FILENAME} once training has started)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        state = _load_format_1(path)
    except Exception as e:  # torch raises several kinds for a truncated or foreign file
        raise ConfigError(f"damaged checkpoint: {path} cannot be read ({type(e).__name__})") from None
    if not isinstance(state, dict) or "model" not in state or "vocab" not in state:
        raise ConfigError(f"damaged checkpoint: {path} is not a makemore checkpoint")
    if state.get("format", 1) > FORMAT:
        raise ConfigError(
            f"{path} has checkpoint format {state['format']}, newer than this makemore reads "
            f"({FORMAT}): update makemore"
        )
    if isinstance(state.get("config"), dict):
        upgrade_config(state["config"])
        if "flat" in state["model"]:
            state["model"] = unpack_flat(state["model"], state["config"], len(state["vocab"]))
    return state


def upgrade_config(conf: dict[str, Any]) -> None:
    """Give the config of a checkpoint written before the optimizer group and the model options their
    keys as they are now, so that it resumes: train.weight_decay was SGD's, one layer, no direct connections."""
    model, train = conf.get("model"), conf.get("train")
    if isinstance(model, dict) and model.get("kind") == "mlp":
        model.setdefault("layers", 1)
        model.setdefault("direct", False)
    if "optimizer" not in conf and isinstance(train, dict):
        wd = train.pop("weight_decay", 0.0)
        conf["optimizer"] = {"name": "sgd", "momentum": 0.0, "nesterov": False, "weight_decay": wd}


def unpack_flat(model: dict[str, torch.Tensor], conf: dict[str, Any], vocab_size: int) -> dict[str, torch.Tensor]:
    """Format 2's fast-engine model (one flat tensor: C, [W1; b1], [Wout; bout; D] padded to a multiple of 16
    classes, gain, shift; running statistics beside it) -> the MLP module's state_dict."""
    m, K, V = conf["model"], conf["train"]["replicas"], vocab_size
    E, H, BE = m["emb"], m["hidden"], m["block_size"] * m["emb"]
    Vp = -(-V // 16) * 16
    shapes = {"C": (K, V, E), "W1a": (K, BE + 1, H), "W2a": (K, H + 1 + (BE if m.get("direct") else 0), Vp)}
    if m["norm"] != "none":
        shapes.update(gain1=(K, H), shift1=(K, H))
    parts, offset = {}, 0
    for name, shape in shapes.items():
        n = shape[0] * shape[1] * (shape[2] if len(shape) == 3 else 1)
        parts[name] = model["flat"][offset : offset + n].view(shape)
        offset += n
    W1a, W2a = parts.pop("W1a"), parts.pop("W2a")
    out = {"C": parts.pop("C"), "W1": W1a[:, :BE], "b1": W1a[:, BE], "Wout": W2a[:, :H, :V], "bout": W2a[:, H, :V]}
    if m.get("direct"):
        out["D"] = W2a[:, H + 1 :, :V]
    out |= parts | {f"{k}1": v for k, v in model.items() if k != "flat"}
    return {k: v.clone() for k, v in out.items()}


def _load_format_1(path: Path) -> dict[str, Any]:
    """Format 1 pickled the train.Progress dataclass: allow that one class, then make it a plain dict."""
    from .train import Progress

    try:
        with torch.serialization.safe_globals([Progress]):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"damaged checkpoint: {path} cannot be read ({type(e).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("progress"), Progress):
        old = state["progress"]
        state["progress"] = Progress(
            step=old.step,
            seconds=old.seconds,
            batch_rng=old.batch_rng,
            losses=old.losses,
            evals=old.evals,
            initial_loss=getattr(old, "initial_loss", None),
        ).state()
        state["format"] = FORMAT
    return state


def check_resume(
    state: dict[str, Any], conf: dict[str, Any], vocab: list[str], where: Path, engine: str | None = None
) -> None:
    """Refuse to continue a checkpoint on a different trajectory: another config (COMPARED_ON_RESUME, each key
    named; with a cosine schedule also train.steps, which shapes the lr), another vocabulary, or a step past
    train.steps."""
    compared = COMPARED_ON_RESUME + (("train.steps",) if conf["schedule"]["name"] == "cosine" else ())
    for key in compared:
        for leaf, was, now in _differences(_pick(state["config"], key), _pick(conf, key), key):
            raise ConfigError(
                f"resume: {where} was written with {leaf}={_text(was)}, this run has {leaf}={_text(now)}; resume "
                f"with the same {leaf}, or start a new run (a resume may change train.steps, not {', '.join(compared)})"
            )
    if engine not in (None, "count") and state.get("engine", "fast") != engine:
        raise ConfigError(
            f"resume: {where} was trained by the {state.get('engine', 'fast')} engine, this run would use "
            f"the {engine} engine; resume with train.engine={state.get('engine', 'fast')}"
        )
    if state["vocab"] != vocab:
        raise ConfigError(f"resume: data.path gives a different vocabulary than {where} was trained on")
    if state["step"] > conf["train"]["steps"]:
        raise ConfigError(f"resume: {where} is at step {state['step']}, beyond train.steps={conf['train']['steps']}")


def _differences(was: Any, now: Any, key: str):
    """(leaf key, old value, new value) where two configs differ below `key`, EVALUATION_ONLY keys left out."""
    if key in EVALUATION_ONLY:
        return
    if isinstance(was, dict) and isinstance(now, dict):
        for k in list(was) + [k for k in now if k not in was]:
            yield from _differences(was.get(k), now.get(k), f"{key}.{k}")
    elif was != now:
        yield key, was, now


def _text(value: Any) -> str:
    return "null" if value is None else str(value).replace(" ", "") if isinstance(value, list) else str(value)


def resume(path: Path, model, conf: dict[str, Any], vocab: list[str], engine: str | None = None):
    """The progress to continue from: the checkpoint's (its parameters loaded into `model`, its optimizer state in
    the progress, which train.fit hands the engine). ConfigError where there is none, or it was written on
    another trajectory (check_resume)."""
    from .train import Progress

    if not path.is_file():
        raise ConfigError(
            f"resume=true: there is no checkpoint to continue, {path} does not exist; pass the dir of a run as "
            "resume=PATH (or as hydra.run.dir=PATH with resume=true), or leave resume out to start a new run"
        )
    state = load(path)
    check_resume(state, conf, vocab, path, engine)
    model.load_state_dict(state["model"])
    log.info("resuming from %s at step %d", path, state["step"])
    return Progress.from_state(state["progress"])


def _pick(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d
