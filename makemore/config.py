"""The config schema: the one place that says which keys exist, their types and allowed values.

The dataclasses are registered in Hydra's ConfigStore and sit under the YAML in conf/, so a typo
(`model.hiden=3`) or a wrong type (`model.hidden=abc`) fails at composition with Hydra's own message.
Ranges that a type cannot express are checked by `validate`, which raises `ConfigError` with one line
naming the key and what is allowed. Nothing here imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional

from omegaconf import MISSING


class ConfigError(ValueError):
    """Bad user input (a config value, a data file, a device): one line naming the key or file."""


class ModelKind(Enum):
    bigram = "bigram"
    mlp = "mlp"
    wavenet = "wavenet"
    rnn = "rnn"
    gru = "gru"
    bow = "bow"
    transformer = "transformer"


class Init(Enum):
    lecture = "lecture"  # the lecture's unscaled torch.randn draws, bit for bit
    scaled = "scaled"  # Kaiming-style tanh gain on W1, small output layer (makemore part 3)


class Norm(Enum):
    none = "none"
    batch = "batch"
    layer = "layer"


class BNEval(Enum):
    running = "running"  # the running statistics training keeps (momentum BN_MOMENTUM): they lag the weights
    calibrated = "calibrated"  # statistics of the current weights over the evaluation's training examples


class Engine(Enum):
    auto = "auto"  # fast where it supports the config, else autograd
    fast = "fast"  # the hand-derived step (step.py)
    autograd = "autograd"  # nn.Module + torch.optim: every option


class Precision(Enum):
    fp32 = "fp32"  # float32 everywhere
    bf16 = "bf16"  # bfloat16 matrix products, float32 weights, losses, sums and evaluation


class DeviceKind(Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


@dataclass
class DataConfig:
    path: Optional[str] = None  # null: the embedded SSA 2017 names
    splits: List[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])  # train, dev, test fractions of the words
    seed: int = 42  # the lecture's shuffle seed (random.seed, then random.shuffle of the words)
    limit_words: Optional[int] = None  # keep only the first N words (before shuffling)


# The model group: one dataclass per family (models/), each registered as its `model=` option. A key of another
# family (model=transformer model.hidden=64) fails at composition, as a typo does.


@dataclass
class MLPConfig:
    """model=mlp: the lecture's MLP (Bengio et al. 2003), with more tanh layers if asked."""

    kind: ModelKind = ModelKind.mlp
    block_size: int = 3  # characters of context
    emb: int = 10  # embedding dimensions per character
    hidden: int = 200  # units per tanh layer
    init: Init = Init.lecture
    norm: Norm = Norm.none
    layers: int = 1  # tanh hidden layers of width `hidden` (the norm applies to each)
    direct: bool = False  # Bengio et al. 2003's direct connections from the embeddings to the output layer
    bn_eval: BNEval = BNEval.calibrated  # with norm=batch: the statistics evaluation normalizes by
    dropout: float = 0.0  # on each tanh layer's output while training (trains with the autograd engine)


@dataclass
class BigramConfig:
    """model=bigram: the previous lecture's count model."""

    kind: ModelKind = ModelKind.bigram
    block_size: int = 1  # the previous character only


@dataclass
class WaveNetConfig:
    """model=wavenet: makemore part 5's hierarchical model, pairs merged level by level."""

    kind: ModelKind = ModelKind.wavenet
    block_size: int = 8  # characters of context: a power of 2, log2 of it levels
    emb: int = 24
    hidden: int = 128  # units per level
    init: Init = Init.scaled
    norm: Norm = Norm.batch
    bn_eval: BNEval = BNEval.calibrated  # with norm=batch: the statistics evaluation normalizes by
    dropout: float = 0.0  # on each level's tanh output while training (trains with the autograd engine)


@dataclass
class RNNConfig:
    """model=rnn, model=gru: makemore's recurrent models (kind: the cell)."""

    kind: ModelKind = ModelKind.rnn
    block_size: int = 16  # tokens of a row: the start token and up to 15 characters (names.txt's longest)
    emb: int = 64  # makemore's n_embd
    hidden: int = 64  # the hidden state (makemore's n_embd2)
    dropout: float = 0.0  # on the embeddings in and the hidden states out while training (not in makemore)


@dataclass
class BoWConfig:
    """model=bow: makemore's causal bag of words."""

    kind: ModelKind = ModelKind.bow
    block_size: int = 16
    emb: int = 64  # makemore's n_embd
    hidden: int = 64  # its MLP's width (makemore's n_embd2)


@dataclass
class TransformerConfig:
    """model=transformer: makemore's Transformer."""

    kind: ModelKind = ModelKind.transformer
    block_size: int = 16
    emb: int = 64  # makemore's n_embd
    n_layer: int = 4
    n_head: int = 4  # emb must be a multiple of it
    dropout: float = 0.0  # on embeddings, attention weights and residual branches while training


MODEL_CONFIGS = {
    "bigram": BigramConfig,
    "mlp": MLPConfig,
    "wavenet": WaveNetConfig,
    "rnn": RNNConfig,
    "gru": RNNConfig,
    "bow": BoWConfig,
    "transformer": TransformerConfig,
}  # model.kind -> its dataclass


@dataclass
class StepSchedule:
    name: str = "step"
    lrs: List[float] = field(default_factory=lambda: [0.1, 0.01])  # lrs[0] before milestones[0], lrs[1] after, ...
    milestones: List[int] = field(default_factory=lambda: [100000])  # the steps where the lr changes


@dataclass
class CosineSchedule:
    name: str = "cosine"
    lr: float = 0.1  # the peak, after the warm-up
    min_lr: float = 0.001  # the end of the half cosine
    warmup: int = 0  # steps of linear warm-up from 0 to lr


@dataclass
class SGDConfig:
    name: str = "sgd"
    momentum: float = 0.0  # torch.optim.SGD's (dampening 0)
    nesterov: bool = False  # Nesterov's form (needs momentum > 0)
    weight_decay: float = 0.0  # on the embeddings and weights, not on biases or norm parameters


@dataclass
class AdamWConfig:
    name: str = "adamw"
    betas: List[float] = field(default_factory=lambda: [0.9, 0.99])  # the moments' decay rates (makemore's)
    eps: float = 1e-8  # the denominator's epsilon
    weight_decay: float = 0.01  # decoupled (karpathy/makemore's choice); not on biases or norm parameters


@dataclass
class DeviceConfig:
    name: DeviceKind = DeviceKind.auto
    threads: int = 0  # torch threads; 0 = automatic: 1 for small training steps, else cores // parallel jobs


@dataclass
class TrainConfig:
    steps: int = 200000
    batch_size: int = 32  # 0 = full batch (every training example every step)
    eval_every: Optional[int] = None  # null: train.steps / 20 (20 evaluations per run)
    eval_examples: Optional[int] = 1000000  # per split: periodic evaluations score <= this, <= eval_every x batch
    eval_test: bool = False  # also evaluate the test split at the end
    checkpoint_every: int = 10000  # steps between checkpoints (and one at the end)
    replicas: int = 1  # K models side by side, replica k seeded seed + k, with its own batches
    ensemble: bool = False  # the K replicas are one model: losses and samples are those of their mean probability
    engine: Engine = Engine.auto
    precision: Precision = Precision.fp32
    compile: bool = False  # torch.compile the autograd engine's forward (docs/performance.md: where it pays)
    log_every: int = 100  # steps per TensorBoard minibatch-loss point
    diagnose_every: Optional[int] = None  # steps between diagnoses (diagnostics.py); null: at every evaluation; 0: off


@dataclass
class LrFindConfig:
    start: float = -3.0  # lr exponent of the first step (lr = 10^start)
    end: float = 0.0  # lr exponent of the last step
    steps: int = 1000  # steps of the lr sweep (train.steps is not used)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: Any = MISSING  # a family's dataclass (MODEL_CONFIGS), chosen by the model group
    schedule: Any = MISSING  # StepSchedule or CosineSchedule, chosen by the schedule group
    optimizer: Any = MISSING  # SGDConfig or AdamWConfig, chosen by the optimizer group
    device: DeviceConfig = field(default_factory=DeviceConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 2147483647  # the lecture's generator seed (init and batches)
    resume: bool = False  # continue the run in hydra.run.dir from its checkpoint.pt
    samples: int = 20  # names sampled at the end
    lr_find: LrFindConfig = field(default_factory=LrFindConfig)


def schedule_keys() -> List[str]:
    """Every key of every schedule (schedule.name, .lrs, .milestones, .lr, .min_lr, .warmup)."""
    from dataclasses import fields

    keys = [f"schedule.{f.name}" for cls in (StepSchedule, CosineSchedule) for f in fields(cls)]
    return list(dict.fromkeys(keys))


def model_keys() -> List[str]:
    """Every key of every family (model.kind, .block_size, .emb, .hidden, ...)."""
    from dataclasses import fields

    return list(dict.fromkeys(f"model.{f.name}" for cls in MODEL_CONFIGS.values() for f in fields(cls)))


def optimizer_keys() -> List[str]:
    """Every key of every optimizer (optimizer.name, .momentum, .nesterov, .weight_decay, .betas, .eps)."""
    from dataclasses import fields

    keys = [f"optimizer.{f.name}" for cls in (SGDConfig, AdamWConfig) for f in fields(cls)]
    return list(dict.fromkeys(keys))


def to_dict(cfg: Any) -> dict:
    """The resolved config as plain dicts, lists and builtins (enums as their names): what runs record."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def _positive_int(value: Any, key: str, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")


def validate(cfg: Any) -> None:
    """Check the ranges a type cannot express. `cfg` is a DictConfig or the dataclasses above."""
    d, m, s, t = cfg.data, cfg.model, cfg.schedule, cfg.train
    splits = list(d.splits)
    if len(splits) != 3 or any(not (x > 0) for x in splits) or not math.isclose(sum(splits), 1.0, abs_tol=1e-6):
        raise ConfigError(f"data.splits must be three positive fractions (train, dev, test) summing to 1, got {splits}")
    if d.limit_words is not None:
        _positive_int(d.limit_words, "data.limit_words", 3)
    _validate_model(m)
    _positive_int(t.steps, "train.steps", 0)
    _positive_int(t.batch_size, "train.batch_size", 0)
    if t.eval_every is not None:
        _positive_int(t.eval_every, "train.eval_every")
    if t.eval_examples is not None:
        _positive_int(t.eval_examples, "train.eval_examples")
    _positive_int(t.checkpoint_every, "train.checkpoint_every")
    _positive_int(t.replicas, "train.replicas")
    if t.ensemble and t.replicas < 2:
        raise ConfigError(f"train.ensemble=true needs train.replicas >= 2 (its members), got {t.replicas}")
    if t.ensemble and _kind(m.kind) == "bigram":
        raise ConfigError("train.ensemble: model=bigram is counted, its replicas would be one table; use another model")
    _positive_int(t.log_every, "train.log_every")
    if t.diagnose_every is not None:
        _positive_int(t.diagnose_every, "train.diagnose_every", 0)
    _positive_int(cfg.samples, "samples", 0)
    if cfg.device.threads < 0:
        raise ConfigError(f"device.threads must be >= 0 (0 = automatic), got {cfg.device.threads}")
    _validate_schedule(s)
    _validate_optimizer(cfg.optimizer)


def _validate_model(m: Any) -> None:
    from omegaconf import OmegaConf

    kind = _kind(m.kind)
    family = OmegaConf.get_type(m) if OmegaConf.is_config(m) else type(m)
    if family in MODEL_CONFIGS.values() and MODEL_CONFIGS.get(kind) is not family:
        kinds = ", ".join(k for k, c in MODEL_CONFIGS.items() if c is family)
        raise ConfigError(f"model.kind must be {kinds} for this model group option, got {kind}; pick the family with "
                          f"model={kind}")  # fmt: skip
    for key in ("block_size", "emb", "hidden", "layers", "n_layer", "n_head"):
        value = getattr(m, key, None)
        if value is not None:
            _positive_int(value, f"model.{key}")
    if kind == "bigram" and m.block_size != 1:
        raise ConfigError(f"model.block_size must be 1 for model=bigram, got {m.block_size}")
    if kind == "wavenet" and (m.block_size < 2 or m.block_size & (m.block_size - 1)):
        raise ConfigError(f"model.block_size must be a power of 2 (2, 4, 8, ...) for model=wavenet, got {m.block_size}")
    if kind == "transformer" and m.emb % m.n_head:
        raise ConfigError(f"model.emb ({m.emb}) must be a multiple of model.n_head ({m.n_head})")
    dropout = getattr(m, "dropout", None)
    if dropout is not None and not 0 <= dropout < 1:
        raise ConfigError(f"model.dropout must be in [0, 1), got {dropout}")


def _validate_optimizer(o: Any) -> None:
    if not o.weight_decay >= 0:
        raise ConfigError(f"optimizer.weight_decay must be >= 0, got {o.weight_decay}")
    if o.name == "sgd":
        if not 0 <= o.momentum < 1:
            raise ConfigError(f"optimizer.momentum must be in [0, 1), got {o.momentum}")
        if o.nesterov and not o.momentum > 0:
            raise ConfigError("optimizer.nesterov=true needs optimizer.momentum > 0")
    elif o.name == "adamw":
        betas = list(o.betas)
        if len(betas) != 2 or any(not 0 <= b < 1 for b in betas):
            raise ConfigError(f"optimizer.betas must be two numbers in [0, 1), got {betas}")
        if not o.eps > 0:
            raise ConfigError(f"optimizer.eps must be > 0, got {o.eps}")
    else:
        raise ConfigError(f"optimizer.name must be one of sgd, adamw, got {o.name!r}")


def _validate_schedule(s: Any) -> None:
    if s.name == "step":
        lrs, milestones = list(s.lrs), list(s.milestones)
        if any(not (lr > 0) for lr in lrs):
            raise ConfigError(f"schedule.lrs must all be > 0, got {lrs}")
        if len(lrs) != len(milestones) + 1:
            raise ConfigError(
                "schedule.lrs needs one more entry than schedule.milestones, "
                f"got {len(lrs)} lrs and {len(milestones)} milestones"
            )
        if any(b <= a for a, b in zip(milestones, milestones[1:])) or any(x < 1 for x in milestones):
            raise ConfigError(f"schedule.milestones must be strictly increasing steps >= 1, got {milestones}")
    elif s.name == "cosine":
        if not s.lr > 0:
            raise ConfigError(f"schedule.lr must be > 0, got {s.lr}")
        if not 0 <= s.min_lr <= s.lr:
            raise ConfigError(f"schedule.min_lr must be between 0 and schedule.lr ({s.lr}), got {s.min_lr}")
        _positive_int(s.warmup, "schedule.warmup", 0)
    else:
        raise ConfigError(f"schedule.name must be one of step, cosine, got {s.name!r}")


def _kind(value: Any) -> str:
    return value.value if isinstance(value, Enum) else str(value)
