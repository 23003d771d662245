"""Config composition: every key of the contract, every group option and preset, and each bad value."""

from __future__ import annotations

import copy
import functools

import pytest
import yaml
from conftest import CONF, QUICK, run_cli
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from makemore.config import ConfigError, validate
from makemore.hydra_app import check_moved_keys, register_configs, register_resolvers, unnamed_swept_key

register_configs()
register_resolvers()


@functools.cache
def _composed(overrides: tuple[str, ...], hydra_cfg: bool):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra_cfg)


def compose_cfg(*overrides: str, hydra_cfg: bool = False):
    """Hydra's composition (about 0.2 s here: each distinct one is composed once per session, then copied)."""
    return copy.deepcopy(_composed(overrides, hydra_cfg))


def with_values(*overrides: str):
    """The composition of the group choices among `overrides` (cached), with the `key=value` ones set on it in
    Python: typed as the schema says (OmegaConf checks types on assignment), not re-composed."""
    groups = tuple(o for o in overrides if "." not in o.split("=", 1)[0])
    cfg = compose_cfg(*groups)
    for o in overrides:
        key, _, value = o.partition("=")
        if "." in key:
            OmegaConf.update(cfg, key, yaml.safe_load(value), merge=False)
    return cfg


def slow_after(n: int, cases: list) -> list:
    """The first n cases in the fast tier, the others slow (CI runs both)."""
    return [c if i < n else pytest.param(*c, marks=pytest.mark.slow) for i, c in enumerate(cases)]


def test_defaults_are_the_contract():
    cfg = compose_cfg()
    assert cfg.data.path is None and list(cfg.data.splits) == [0.8, 0.1, 0.1] and cfg.data.seed == 42
    m = cfg.model
    assert (m.block_size, m.emb, m.hidden, m.init.value, m.kind.value) == (3, 10, 200, "lecture", "mlp")
    assert list(cfg.schedule.lrs) == [0.1, 0.01] and list(cfg.schedule.milestones) == [100000]
    t = cfg.train
    assert (t.steps, t.batch_size, t.eval_test, t.replicas, t.engine.value) == (200000, 32, False, 1, "auto")
    assert (m.layers, m.direct) == (1, False)
    o = cfg.optimizer  # the lecture's plain SGD
    assert (o.name, o.momentum, o.nesterov, o.weight_decay) == ("sgd", 0.0, False, 0.0)
    assert t.eval_every is None and t.checkpoint_every > 0  # null: train.steps / 20
    assert t.diagnose_every is None  # null: at every evaluation
    assert cfg.seed == 2147483647 and cfg.resume is False
    assert cfg.device.name.value == "auto"
    validate(cfg)


@pytest.mark.parametrize(
    "overrides, key, expected",
    slow_after(
        8,
        [
            (["model=bigram"], "model.kind", "bigram"),
            (["model=wavenet"], "model.block_size", 8),
            (["model=rnn"], "model.kind", "rnn"),
            (["model=gru"], "model.kind", "gru"),
            (["model=bow"], "model.hidden", 64),
            (["model=transformer"], "model.n_head", 4),
            (["model=transformer", "model.dropout=0.1"], "model.dropout", 0.1),
            (["schedule=cosine"], "schedule.name", "cosine"),
            (["optimizer=adamw"], "optimizer.betas", [0.9, 0.99]),
            (["optimizer=sgd", "optimizer.momentum=0.9"], "optimizer.momentum", 0.9),
            (["train.engine=autograd", "model.layers=3", "model.direct=true"], "train.engine", "autograd"),
            (["device=cpu"], "device.name", "cpu"),
            (["device=cuda"], "device.name", "cuda"),
            (["device=mps"], "device.name", "mps"),
            (["experiment=lecture"], "model.init", "lecture"),
            (["experiment=overfit_batch"], "data.limit_words", 5),
            (["experiment=grid_hidden_emb"], "hydra.mode", "MULTIRUN"),
            (["experiment=best"], "model.hidden", 1000),
            (["hparams_search=optuna"], "hydra.sweeper.study_name", "makemore"),
            (["hparams_search=mlp_wide"], "hydra.sweeper.n_trials", 40),
            (["hparams_search=mlp_wider"], "hydra.sweeper.n_jobs", 2),
            (["hparams_search=mlp_wide"], "hydra.sweeper.min_resource", 5000),
            (["hparams_search=mlp_wide"], "hydra.sweep.dir", "outputs/search/mlp_wide"),
            (["hparams_search=recurrent"], "hydra.sweep.dir", "outputs/search/recurrent"),
            (["hparams_search=recurrent"], "hydra.sweeper.min_resource", 2000),
            (["hparams_search=optuna", "hydra.sweeper.pruner=median"], "hydra.sweeper.pruner", "median"),
            (["hydra/sweeper=makemore_optuna"], "hydra.sweeper.pruner", "hyperband"),
            (["hydra/launcher=slurm"], "hydra.launcher.mem_gb", 4),
            (
                ["hydra/launcher=submitit_local"],
                "hydra.launcher._target_",
                "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
            ),
        ],
    ),
)
def test_every_option_composes(overrides, key, expected):
    cfg = compose_cfg(*overrides, hydra_cfg=True)
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    assert set(OmegaConf.to_container(job, resolve=True)) == {
        "data",
        "model",
        "schedule",
        "optimizer",
        "device",
        "train",
        "seed",
        "resume",
        "samples",
        "lr_find",
    }
    value = OmegaConf.select(cfg, key)
    value = OmegaConf.to_container(value) if OmegaConf.is_list(value) else value
    assert getattr(value, "name", value) == expected  # enums by name
    validate(cfg)


def test_lecture_preset():
    cfg = compose_cfg("experiment=lecture", "model.hidden=7")  # a preset is a delta: overrides still win
    assert (cfg.model.block_size, cfg.model.emb, cfg.train.batch_size, cfg.train.steps) == (3, 10, 32, 200000)
    assert list(cfg.schedule.lrs) == [0.1, 0.01] and list(cfg.schedule.milestones) == [100000]
    assert cfg.model.hidden == 7


def test_overfit_preset():
    cfg = compose_cfg("experiment=overfit_batch")
    assert (cfg.data.limit_words, cfg.model.emb, cfg.model.hidden, cfg.train.steps, cfg.train.batch_size) == (
        5,
        2,
        100,
        1000,
        0,
    )
    assert list(cfg.schedule.lrs) == [0.1]


def test_best_preset():
    cfg = compose_cfg("experiment=best")
    m, t = cfg.model, cfg.train
    assert (m.block_size, m.emb, m.hidden, m.norm.value, m.init.value) == (6, 32, 1000, "layer", "scaled")
    assert (t.steps, t.batch_size, t.eval_test) == (60000, 256, False)
    assert (cfg.optimizer.name, cfg.optimizer.weight_decay) == ("sgd", 0.0003)
    assert (cfg.schedule.lr, cfg.schedule.min_lr) == (0.0626, 0.001)


def test_best_adamw_preset():
    """The widened search's best: two batch-normed layers, AdamW; it trains on the fast engine."""
    from makemore import engine, models
    from makemore.config import to_dict

    cfg = compose_cfg("experiment=best_adamw")
    m = cfg.model
    assert (m.block_size, m.emb, m.hidden, m.layers, m.norm.value, m.direct) == (6, 16, 300, 2, "batch", False)
    assert (cfg.train.steps, cfg.train.batch_size) == (60000, 128)
    assert (cfg.optimizer.name, round(cfg.optimizer.weight_decay, 4)) == ("adamw", 0.5414)
    assert (round(cfg.schedule.lr, 6), cfg.schedule.min_lr, cfg.schedule.name) == (0.001168, 1e-5, "cosine")
    assert engine.resolve("auto", models.build(to_dict(cfg)["model"], 27)) == "fast"


def test_best_mlp_family_preset_is_best_adamw_wider_with_dropout():
    """best_adamw at hidden 800 with dropout 0.2 for 100,000 steps: nothing else differs, and auto trains it
    with autograd."""
    from makemore import engine, models
    from makemore.config import to_dict

    cfg = compose_cfg("experiment=best_mlp_family")
    assert cfg == compose_cfg("experiment=best_adamw", "model.hidden=800", "model.dropout=0.2", "train.steps=100000")
    validate(cfg)
    assert engine.resolve("auto", models.build(to_dict(cfg)["model"], 27)) == "autograd"


def test_best_ensemble_preset_is_four_hidden_500_mlps_as_one_model():
    """best_adamw at hidden 500 with dropout 0.1, four replicas scored as one ensemble: nothing else differs."""
    cfg = compose_cfg("experiment=best_ensemble")
    overrides = ("model.hidden=500", "model.dropout=0.1", "train.replicas=4", "train.ensemble=true")
    assert cfg == compose_cfg("experiment=best_adamw", *overrides)
    validate(cfg)


def test_transformer_dropout_preset_is_the_transformer_regularized():
    """experiment=transformer with dropout 0.1, 30,000 steps and a stepped lr: nothing else differs."""
    overrides = ["model.dropout=0.1", "train.steps=30000", "train.eval_every=3000"]
    overrides += ["schedule.lrs=[0.001,0.0003,0.0001]", "schedule.milestones=[15000,24000]"]
    cfg = compose_cfg("experiment=transformer_dropout")
    assert cfg == compose_cfg("experiment=transformer", *overrides)
    validate(cfg)


def test_best_overall_preset_is_best_ensemble():
    assert compose_cfg("experiment=best_overall") == compose_cfg("experiment=best_ensemble")


def test_best_rnn_preset():
    """hparams_search=families' best (its 9000-step study): an RNN of hidden 256 with AdamW and a cosine lr."""
    cfg = compose_cfg("experiment=best_rnn")
    m, t = cfg.model, cfg.train
    assert (m.kind.value, m.block_size, m.emb, m.hidden) == ("rnn", 16, 64, 256)
    assert (t.steps, t.batch_size) == (9000, 64)
    assert (cfg.optimizer.name, round(cfg.optimizer.weight_decay, 4)) == ("adamw", 0.0498)
    assert (round(cfg.schedule.lr, 6), cfg.schedule.min_lr, cfg.schedule.name) == (0.001137, 1e-5, "cosine")
    validate(cfg)


def test_grid_preset_is_a_multirun():
    cfg = compose_cfg("experiment=grid_hidden_emb", hydra_cfg=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert dict(cfg.hydra.sweeper.params) == {"model.hidden": "100,200,300", "model.emb": "2,10,30"}


@pytest.mark.parametrize(
    "override",
    [
        "model.hiden=3",
        "model.hidden=abc",
        "model=transformer model.hidden=64",  # a key of another family
        *(
            pytest.param(o, marks=pytest.mark.slow)
            for o in (
                "train.steps=1.5",
                "model.init=fancy",
                "model.norm=group",
                "device=tpu",
                "schedule.lrs=0.1",
                "model=rnn model.n_layer=2",
                "model=wavenet model.layers=2",
                "model=transformer model.n_head=two",
            )
        ),
    ],
)
def test_typos_and_types_fail_at_composition(override):
    with pytest.raises(ConfigCompositionException):
        compose_cfg(*override.split())


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["model.hidden=0"], "model.hidden"),
        (["model.emb=-1"], "model.emb"),
        (["model.block_size=0"], "model.block_size"),
        (["train.batch_size=-1"], "train.batch_size"),
        (["train.steps=-5"], "train.steps"),
        (["data.splits=[0.8,0.1,0.2]"], "data.splits"),
        (["data.splits=[0.9,0.1,0.0]"], "data.splits"),
        (["data.splits=[0.5,0.5]"], "data.splits"),
        (["schedule.lrs=[0.1,0]"], "schedule.lrs"),
        (["schedule.lrs=[-0.1,0.01]"], "schedule.lrs"),
        (["schedule.lrs=[0.1]"], "schedule.lrs"),
        (["schedule.lrs=[0.1,0.01,0.001]", "schedule.milestones=[100,50]"], "schedule.milestones"),
        (["schedule.lrs=[0.1,0.01,0.001]", "schedule.milestones=[100,100]"], "schedule.milestones"),
        (["schedule=cosine", "schedule.lr=0"], "schedule.lr"),
        (["train.replicas=0"], "train.replicas"),
        (["train.diagnose_every=-1"], "train.diagnose_every"),
        (["optimizer.weight_decay=-1"], "optimizer.weight_decay"),
        (["optimizer=adamw", "optimizer.weight_decay=-1"], "optimizer.weight_decay"),
        (["optimizer.momentum=1"], "optimizer.momentum"),
        (["optimizer.nesterov=true"], "optimizer.nesterov"),
        (["optimizer=adamw", "optimizer.betas=[0.9]"], "optimizer.betas"),
        (["optimizer=adamw", "optimizer.betas=[0.9,1.0]"], "optimizer.betas"),
        (["optimizer=adamw", "optimizer.eps=0"], "optimizer.eps"),
        (["model.layers=0"], "model.layers"),
        (["model=wavenet", "model.block_size=6"], "model.block_size must be a power of 2"),
        (["model=bigram", "model.block_size=2"], "model.block_size must be 1"),
        (["model=transformer", "model.emb=30"], r"model.emb \(30\) must be a multiple of model.n_head \(4\)"),
        (["model=transformer", "model.dropout=1.0"], "model.dropout"),
        (["model.dropout=-0.1"], "model.dropout"),
        (["model=wavenet", "model.dropout=1.5"], "model.dropout"),
        (["model=gru", "model.dropout=1.0"], "model.dropout"),
        (["model=transformer", "model.n_layer=0"], "model.n_layer"),
        (["model=gru", "model.hidden=0"], "model.hidden"),
        (["model=rnn", "model.kind=transformer"], "model.kind must be rnn, gru"),
        (["model=bigram", "model.block_size=3"], "model.block_size"),
    ],
)
def test_out_of_range_values_name_their_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(with_values(*overrides))


def test_steps_zero_is_allowed():
    validate(compose_cfg("train.steps=0"))


@pytest.mark.parametrize("arg", ["train.weight_decay=0.1", "+train.weight_decay=0.1"])
def test_the_moved_weight_decay_names_its_new_key(arg):
    moved = r"train\.weight_decay moved to optimizer\.weight_decay.*optimizer\.weight_decay=0\.1"
    with pytest.raises(ConfigError, match=moved):
        check_moved_keys(["model.hidden=3", arg])
    check_moved_keys(["optimizer.weight_decay=0.1"])
    with pytest.raises(ConfigCompositionException):  # not a key of the schema any more
        compose_cfg(arg.lstrip("+"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, needle",
    [
        (["model.hiden=3"], "model.hiden"),
        (["model.hidden=abc"], "model.hidden"),
        (["model.hidden=0"], "model.hidden must be an integer >= 1"),
        (["schedule.lrs=[0.1]"], "schedule.lrs needs one more entry than schedule.milestones"),
        (["data.splits=[0.8,0.1,0.2]"], "data.splits"),
        (["train.weight_decay=0.01"], "train.weight_decay moved to optimizer.weight_decay"),
        (["train.engine=fast", "model=rnn"], "train.engine=fast does not support model=rnn"),
    ],
)
def test_cli_bad_config_one_clear_line(tmp_path, args, needle):
    r = run_cli(*QUICK, *args, cwd=tmp_path)
    assert r.returncode != 0
    assert needle in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "outputs" / "runs").exists() or not any(
        (tmp_path / "outputs" / "runs").rglob("metrics.json")
    )


@pytest.mark.parametrize(
    "overrides, params, key",
    [
        (["data.path=a.txt,b.txt"], None, "data.path"),
        (["experiment=lecture,best", "model.hidden=8"], None, "experiment"),
        (["device.threads=range(1,3)"], None, "device.threads"),
        (["model.hidden=8,16", "data.path=a.txt", "seed=1,2"], None, None),  # a fixed path, a swept seed: fine
        ([], {"model.emb": "choice(2, 4)", "device": "choice(cpu, cuda)"}, "device"),
        ([], {"model.emb": "choice(2, 4)"}, None),
    ],
)
def test_sweeps_over_keys_left_out_of_dir_names_are_found(overrides, params, key):
    excluded = compose_cfg(hydra_cfg=True).hydra.job.config.override_dirname.exclude_keys
    assert unnamed_swept_key(overrides, params, excluded) == key
