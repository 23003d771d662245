"""Searches on the project's Optuna sweeper (hydra/sweeper=makemore_optuna, makemore/search.py): the search
space, the pruners, a study continued after an interruption, the loop without a batch barrier and a pruned
run's record (fast, in process, on real Optuna studies); then real searches through subprocesses: pruning
recorded everywhere, resuming after SIGKILL, a slot freed at once, optuna-dashboard serving a study, and a
single run that never imports Optuna."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import CONF, metrics, run_cli
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from makemore import engine as engines
from makemore import search
from makemore.hydra_app import register_configs, register_resolvers
from makemore.models import MLP
from makemore.results.console import Console
from makemore.results.runlog import RunLog
from makemore.results.sweep import to_markdown
from makemore.results.tensorboard import TensorBoard
from makemore.schedule import step_schedule
from makemore.train import Loop, Progress, Pruned, fit

optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- the search space ---------------------------------------------------------------------------------------


def test_the_presets_space_maps_to_optuna_distributions():
    space, fixed = search.search_space(
        [
            "model.emb=choice(2, 5, 10)",
            "model.hidden=int(interval(50, 600))",
            "schedule.lr=tag(log, interval(0.01, 0.5))",
            "train.eval_examples=interval(0.5, 1)",
            "model.block_size=range(2, 9, 2)",
            "model.norm=choice(none, batch)",
            "train.steps=300",
            "data.path=words.txt",
        ]
    )
    assert space == {
        "model.emb": CategoricalDistribution([2, 5, 10]),
        "model.hidden": IntDistribution(50, 600),
        "schedule.lr": FloatDistribution(0.01, 0.5, log=True),
        "train.eval_examples": FloatDistribution(0.5, 1.0),
        "model.block_size": IntDistribution(2, 8, step=2),  # Hydra's range excludes its stop
        "model.norm": CategoricalDistribution(["none", "batch"]),
    }
    assert fixed == {"train.steps": "300", "data.path": "words.txt"}
    # a command-line value fixes a key of the preset's space
    space, fixed = search.search_space(["model.emb=choice(2, 5)", "model.emb=8"])
    assert space == {} and fixed == {"model.emb": "8"}
    assert search.trial_overrides({"model.emb": 2, "x": None}, {"train.steps": "300"}) == [
        "model.emb=2",
        "x=null",
        "train.steps=300",
    ]


def test_a_sweep_that_optuna_cannot_sample_is_refused_in_one_line():
    with pytest.raises(search.SearchError, match=r"^model.emb: glob\(\*\) is not a search space; use choice"):
        search.search_space(["model.emb=glob(*)"])


CONDITIONAL = {
    "optimizer=sgd": {"schedule.lr": "tag(log, interval(0.03, 0.3))", "optimizer.weight_decay": "choice(0.0, 0.001)"},
    "optimizer=adamw": {"schedule.lr": "tag(log, interval(0.0005, 0.01))", "schedule.min_lr": 0.00001},
    "model.layers=2": {"model.hidden": "choice(200, 300)"},
}


def test_a_conditional_key_is_sampled_only_in_the_trials_that_meet_its_condition():
    space, fixed = search.search_space(["optimizer=choice(sgd, adamw)", "model.layers=choice(1, 2)", "train.steps=9"])
    conditional = search.conditional_space(CONDITIONAL, space, fixed)
    assert conditional["optimizer=adamw"] == {
        "schedule.lr | optimizer=adamw": FloatDistribution(0.0005, 0.01, log=True),
        "schedule.min_lr | optimizer=adamw": CategoricalDistribution(["1e-05"]),  # a plain value: one choice
    }
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
    seen = set()
    for _ in range(24):
        trial = study.ask(space)
        search.suggest_conditional(trial, conditional)
        over = dict(o.split("=", 1) for o in search.trial_overrides(trial.params, fixed))
        opt, layers, lr = over["optimizer"], over["model.layers"], float(over["schedule.lr"])
        seen.add((opt, layers))
        if opt == "sgd":
            assert 0.03 <= lr <= 0.3 and over["optimizer.weight_decay"] in ("0.0", "0.001")
            assert "schedule.min_lr" not in over
        else:
            assert 0.0005 <= lr <= 0.01 and over["schedule.min_lr"] == "1e-05"
            assert "optimizer.weight_decay" not in over
        assert ("model.hidden" in over) == (layers == "2")
        assert over["train.steps"] == "9"
        study.tell(trial, lr)  # TPE then models each optimizer's lr under its own name
    assert seen == {("sgd", "1"), ("sgd", "2"), ("adamw", "1"), ("adamw", "2")}
    best = search.best_results(study)["best_params"]
    assert "schedule.lr" in best and not any("|" in k for k in best)  # override keys, not Optuna's names


def test_a_command_line_value_settles_a_condition():
    """optimizer=adamw on the command line: adamw's keys join the main space, sgd's are never sampled; a key
    the command line fixes is not sampled either."""
    space, fixed = search.search_space(
        ["optimizer=choice(sgd, adamw)", "model.layers=choice(1, 2)", "optimizer=adamw", "schedule.min_lr=0.0"]
    )
    conditional = search.conditional_space(CONDITIONAL, space, fixed)
    assert list(conditional) == ["model.layers=2"]
    assert space == {
        "model.layers": CategoricalDistribution([1, 2]),
        "schedule.lr": FloatDistribution(0.0005, 0.01, log=True),
    }
    assert fixed == {"optimizer": "adamw", "schedule.min_lr": "0.0"}


@pytest.mark.parametrize(
    "conditional, message",
    [
        ({"optimizer": {}}, "'optimizer' is not a condition; write key=value, e.g. optimizer=adamw"),
        ({"model.emb=2": {"x": "choice(1,2)"}}, "'model.emb=2': model.emb must be a choice(...) of hydra.sweeper"),
        ({"optimizer=adam": {"x": "choice(1,2)"}}, "'optimizer=adam': adam is not one of optimizer's choices (sgd, "),
        (
            {"optimizer=sgd": {"model.layers": "choice(1,3)"}},
            "'optimizer=sgd': model.layers is also in hydra.sweeper.params",
        ),
        ({"optimizer=sgd": "schedule.lr"}, "'optimizer=sgd' must map keys to search spaces, got 'schedule.lr'"),
    ],
)
def test_a_bad_condition_is_refused_in_one_line(conditional, message):
    space, fixed = search.search_space(["optimizer=choice(sgd, adamw)", "model.layers=choice(1, 2)"])
    with pytest.raises(search.SearchError) as e:
        search.conditional_space(conditional, space, fixed)
    assert str(e.value).startswith("hydra.sweeper.conditional: " + message)


def test_an_interrupted_trial_reruns_with_its_conditional_values(tmp_path):
    space, fixed = search.search_space(["optimizer=choice(sgd, adamw)", "model.layers=choice(1, 2)"])
    conditional = search.conditional_space(CONDITIONAL, space, fixed)
    names = space | {n: d for block in conditional.values() for n, d in block.items()}
    storage = search.storage_path(None, tmp_path)
    killed = _open(storage, fixed, tmp_path, names).ask(space)
    search.suggest_conditional(killed, conditional)
    assert any(" | " in name for name in killed.params)
    rerun = _open(storage, fixed, tmp_path, names).ask(space)  # the same command again: that point comes first
    search.suggest_conditional(rerun, conditional)
    assert rerun.params == killed.params


def test_the_widened_search_preset_composes_and_its_conditions_hold():
    cfg = compose_hydra("hparams_search=mlp_wider")
    sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    space, fixed = search.search_space([f"{k}={v}" for k, v in sweeper["params"].items()])
    conditional = search.conditional_space(sweeper["conditional"], space, fixed)
    assert set(conditional) == {"optimizer=sgd", "optimizer=adamw", "model.layers=1", "model.layers=2"}
    assert (cfg.hydra.sweep.dir, cfg.train.steps, sweeper["min_resource"]) == ("outputs/search/mlp_wider", 60000, 5000)
    with pytest.raises(ConfigCompositionException):  # the schema knows the key: a typo fails at composition
        compose_hydra("hparams_search=mlp_wider", "hydra.sweeper.conditionl={}")


def test_the_recurrent_search_preset_composes_to_its_space():
    cfg = compose_hydra("hparams_search=recurrent")
    sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    space, fixed = search.search_space([f"{k}={v}" for k, v in sweeper["params"].items()])
    assert {"model", "model.hidden", "model.emb", "schedule.lr"} <= set(space) and not fixed
    assert (cfg.schedule.name, cfg.optimizer.name, cfg.train.steps) == ("cosine", "adamw", 20000)


# -- pruners ----------------------------------------------------------------------------------------------------


def test_pruner_choice_and_its_settings():
    assert isinstance(search.make_pruner("none", steps=900), optuna.pruners.NopPruner)
    median = search.make_pruner("median", steps=900, min_resource=200, min_trials=2)
    assert isinstance(median, optuna.pruners.MedianPruner)
    assert (median._n_warmup_steps, median._n_startup_trials) == (200, 2)
    band = search.make_pruner("hyperband", steps=900)
    assert isinstance(band, optuna.pruners.HyperbandPruner)
    assert (band._min_resource, band._max_resource, band._reduction_factor) == (100, 900, 3)  # null: steps // 9
    assert isinstance(search.make_pruner("hyperband", steps=900, min_resource=900), optuna.pruners.NopPruner)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "asha"}, "hydra.sweeper.pruner must be one of none, median, hyperband, got 'asha'"),
        ({"reduction_factor": 1}, "hydra.sweeper.reduction_factor must be an integer >= 2, got 1"),
        ({"min_resource": 0}, "hydra.sweeper.min_resource must be a number of steps >= 1 (or null), got 0"),
    ],
)
def test_bad_pruner_settings_are_refused_in_one_line(kwargs, message):
    kwargs = {"name": "hyperband", **kwargs}
    with pytest.raises(search.SearchError) as e:
        search.make_pruner(kwargs.pop("name"), steps=900, **kwargs)
    assert str(e.value) == message


def compose_hydra(*overrides: str):
    register_configs()
    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_the_sweeper_schema_refuses_a_bad_pruner_at_composition():
    cfg = compose_hydra("hparams_search=optuna")
    sweeper = cfg.hydra.sweeper
    assert (sweeper.pruner.name, sweeper.min_resource, sweeper.reduction_factor) == ("hyperband", 3000, 3)
    assert sweeper._target_ == "hydra_plugins.makemore_optuna.optuna_sweeper.OptunaSweeper"
    assert cfg.hydra.sweep.dir == "outputs/search/makemore"
    with pytest.raises(ConfigCompositionException):
        compose_hydra("hparams_search=optuna", "hydra.sweeper.pruner=asha")
    with pytest.raises(ConfigCompositionException):
        compose_hydra("hparams_search=optuna", "hydra.sweeper.min_resourse=10")


def _study(pruner: optuna.pruners.BasePruner) -> optuna.Study:
    return optuna.create_study(pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0))


def _run(study: optuna.Study, curve: list[float], steps: list[int], finish: bool = True) -> bool:
    """Report `curve` at `steps`; True if the pruner stopped it (then it is told pruned)."""
    trial = study.ask()
    for step, value in zip(steps, curve):
        trial.report(value, step)
        if trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            return True
    if finish:
        study.tell(trial, curve[-1])
    return False


def test_hyperband_stops_a_trial_behind_at_its_first_rung():
    steps = [100, 200, 300, 400]
    study = _study(search.make_pruner("hyperband", steps=400, min_resource=200))  # one bracket: rung at 200
    assert not _run(study, [3.0, 2.6, 2.4, 2.3], steps)
    assert _run(study, [3.2, 3.1, 3.0, 2.9], steps)  # worse at step 200: stopped there
    assert study.trials[-1].last_step == 200
    assert not _run(study, [2.9, 2.5, 2.3, 2.2], steps)  # ahead: trains to the end


def test_median_waits_for_its_warm_up_and_first_trials():
    steps = [100, 200, 300]
    study = _study(search.make_pruner("median", steps=300, min_resource=200, min_trials=1))
    assert not _run(study, [2.8, 2.6, 2.5], steps)
    assert _run(study, [3.3, 3.2, 3.1], steps) and study.trials[-1].last_step == 200  # not at 100: warm-up
    assert not _run(study, [2.7, 2.5, 2.4], steps)


# -- the study: kept, continued, refused ----------------------------------------------------------------------


def _open(storage: str, fixed: dict, where: Path, space: dict | None = None) -> optuna.Study:
    if space is None:
        space, _ = search.search_space(["model.emb=choice(2, 4)", "schedule.lr=tag(log, interval(0.01, 0.5))"])
    return search.open_study(
        storage=storage,
        study_name="s",
        direction="minimize",
        space=space,
        fixed=fixed,
        sampler_seed=1,
        n_startup_trials=10,
        pruner=search.make_pruner("median", steps=300),
        where=str(where),
    )


def test_a_continued_study_reruns_its_interrupted_trials_and_refuses_another_command(tmp_path):
    storage = search.storage_path(None, tmp_path / "sweep")
    assert storage == str((tmp_path / "sweep" / "optuna.journal").resolve())
    space, _ = search.search_space(["model.emb=choice(2, 4)", "schedule.lr=tag(log, interval(0.01, 0.5))"])
    study = _open(storage, {"train.steps": "300"}, tmp_path / "sweep")
    done, pruned, killed = (study.ask(space) for _ in range(3))
    study.tell(done, 2.5)
    done_params = done.params
    pruned.report(3.0, 100)
    study.tell(pruned, state=TrialState.PRUNED)
    run_dir = tmp_path / "sweep" / "2_model.emb-4"  # the killed trial's job dir (config.job_name)
    run_dir.mkdir()
    assert search.finished(study) == 2

    again = _open(storage, {"train.steps": "300"}, tmp_path / "sweep")  # the same command, after a SIGKILL
    trials = again.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.WAITING]
    assert trials[3].user_attrs["rerun_of"] == 2
    assert search.finished(again) == 2  # the interrupted trial does not count
    assert metrics(run_dir)["status"] == "failed" and "interrupted" in metrics(run_dir)["error"]
    rerun = again.ask(space)
    assert rerun.number == 3 and rerun.params == killed.params
    assert again.trials[0].params == done_params  # finished trials are kept as they were

    with pytest.raises(search.SearchError) as e:
        _open(storage, {"train.steps": "600"}, tmp_path / "sweep")
    assert str(e.value) == (
        f"the study 's' in {tmp_path / 'sweep'} was started with other overrides or another search space (was "
        "train.steps=300; now train.steps=600); continue it with its own command, or start a new one with "
        "hydra.sweeper.study_name=<new name>"
    )


@pytest.mark.slow  # SQLite's migrations take a second
def test_a_database_url_is_kept_as_it_is(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    assert search.storage_path(url, tmp_path) == url
    study = _open(url, {}, tmp_path)
    assert isinstance(search.open_storage(url), optuna.storages.RDBStorage)
    assert study.user_attrs[search.FIXED_ATTR] == []


# -- the loop: no batch barrier ---------------------------------------------------------------------------------


def test_a_short_trial_frees_its_slot_while_a_long_one_runs():
    """Two slots, trials of 0.8 s, 0.05 s and 0.05 s: the third starts as soon as the second ends, not when the
    first (long) one does; each trial's end is told to Optuna as the launch reports it."""
    study = optuna.create_study()
    for length in (0.8, 0.05, 0.05):
        study.enqueue_trial({"length": length})
    times: dict[int, tuple[float, float]] = {}

    def launch(number, overrides):
        start = time.monotonic()
        time.sleep(float(overrides[0].split("=")[1]))
        times[number] = (start, time.monotonic())
        return (TrialState.PRUNED, None, {}) if number == 2 else (TrialState.COMPLETE, float(number), {})

    space = {"length": CategoricalDistribution([0.8, 0.05])}
    assert search.optimize(study, n_trials=3, n_jobs=2, space=space, fixed={}, launch=launch) == 3
    assert times[2][0] < times[0][1] - 0.5  # started while the long trial ran
    assert times[2][0] >= times[1][1]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    # a study that has its trials runs nothing more
    assert search.optimize(study, n_trials=3, n_jobs=2, space=space, fixed={}, launch=launch) == 0


def test_a_launcher_that_fails_stops_the_search_and_fails_its_trial():
    study = optuna.create_study()

    def launch(number, overrides):
        raise RuntimeError("sbatch: error: invalid partition")

    with pytest.raises(RuntimeError, match="invalid partition"):
        search.optimize(study, n_trials=5, n_jobs=1, space={"x": FloatDistribution(0, 1)}, fixed={}, launch=launch)
    assert [t.state for t in study.trials] == [TrialState.FAIL]


def test_a_trial_reports_each_evaluation_and_is_never_pruned_at_its_end(tmp_path):
    storage = search.storage_path(None, tmp_path)
    space = {"x": FloatDistribution(0, 1)}
    study = search.open_study(
        storage=storage,
        study_name="s",
        direction="minimize",
        space=space,
        fixed={},
        sampler_seed=0,
        n_startup_trials=10,
        pruner=search.make_pruner("median", steps=300),
        where=str(tmp_path),
    )
    first = study.ask(space)
    for step, value in ((100, 2.8), (200, 2.6), (300, 2.5)):
        first.report(value, step)
    study.tell(first, 2.5)
    second = study.ask(space)
    # the job's side, in another process as a search runs it: the study opened from the same journal file
    settings = {"min_resource": 100, "reduction_factor": 3, "min_trials": 1}
    report = search.TrialReport(storage, "s", second.number, "median", 300, **settings)
    assert report(100, 2.7) is None  # better than the first trial at step 100
    assert report(200, 2.9) == "stopped at step 200 by the median pruner (dev loss 2.9000)"
    last = search.TrialReport(storage, "s", study.ask(space).number, "median", 300, **settings)
    assert last(300, 9.0) is None  # the last evaluation: reported, never pruned
    values = {t.number: t.intermediate_values for t in study.get_trials()}
    assert values[1] == {100: 2.7, 200: 2.9} and values[2] == {300: 9.0}


def test_a_jobs_record_becomes_its_trials_state():
    assert search.job_outcome({"status": "ok", "dev_loss": 2.5}) == (TrialState.COMPLETE, 2.5, {"status": "ok"})
    state, value, attrs = search.job_outcome({"status": "pruned", "dev_loss": 3.0, "error": "stopped at step 100"})
    assert (state, value, attrs["status"]) == (TrialState.PRUNED, None, "pruned")  # Optuna keeps its last report
    assert search.job_outcome({"status": "diverged", "error": "training diverged"})[0] == TrialState.FAIL
    assert search.job_outcome(None)[0] == TrialState.FAIL


# -- a pruned run --------------------------------------------------------------------------------------------------


def test_a_pruned_run_stops_at_that_evaluation_and_checkpoints_there(tmp_path, tiny_data):
    data = tiny_data
    model = MLP(len(data.vocab), block_size=3, emb=4, hidden=16, init="scaled")
    engine = engines.make("fast", model, 8, {"name": "sgd", "momentum": 0.0, "nesterov": False, "weight_decay": 0.0})
    saved: list[Progress] = []
    reports: list[tuple[int, float]] = []

    def judge(step, dev):
        reports.append((step, dev))
        return "stopped at step 200 by the median pruner" if step == 200 else None

    tb = TensorBoard(str(tmp_path))
    hooks = RunLog(tb, Console(400, tty=False), 100, save_checkpoint=lambda p: saved.append(p), judge=judge)
    progress = Progress()
    with pytest.raises(Pruned) as e:
        loop = Loop(steps=400, batch_size=8, schedule=step_schedule([0.1], []), seed=0, eval_every=100,
                    checkpoint_every=400)  # fmt: skip
        fit(model, engine, data, loop, hooks, progress)
    assert e.value.step == 200 and str(e.value) == "stopped at step 200 by the median pruner"
    assert [s for s, _ in reports] == [100, 200] and progress.step == 200
    assert saved and saved[-1].step == 200 and saved[-1].optimizer is not None  # a checkpoint to sample from
    tb.hparams_end("pruned")
    tb.close()
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    acc = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    acc.Reload()
    end = plugin_data_pb2.HParamsPluginData.FromString(acc.PluginTagToContent("hparams")[metadata.SESSION_END_INFO_TAG])
    assert end.session_end_info.status == api_pb2.STATUS_UNKNOWN


def test_the_results_table_counts_pruned_trials():
    row = dict(params=10, train_loss=2.0, dev_loss=2.5, train_loss_std=None, dev_loss_std=None, wall_seconds=1.0)
    rows = [
        {**row, "job": "0_a", "knobs": {"x": 1}, "status": "ok", "error": None},
        {**row, "job": "1_b", "knobs": {"x": 2}, "status": "pruned", "error": "stopped at step 100 by the median"},
    ]
    md = to_markdown(rows, "Sweep s", ["x"])
    assert "| pruned: stopped at step 100 by the median |" in md and "1/2 jobs finished, 1 pruned;" in md


# -- end to end: real searches through subprocesses --------------------------------------------------------------

TINY = ("model.hidden=16", "model.emb=4", "train.checkpoint_every=400", "samples=0")


def search_args(sweep: Path, words: Path, *extra: str) -> list[str]:
    """A search over a good and a hopeless lr, the sweeper chosen on the command line (no preset)."""
    return [
        "-m",
        "hydra/sweeper=makemore_optuna",
        "schedule=cosine",
        "model.init=scaled",
        "schedule.lr=choice(0.5,0.00001)",
        "schedule.min_lr=0.000001",
        *TINY,
        f"data.path={words}",
        f"hydra.sweep.dir={sweep}",
        *extra,
    ]


@pytest.fixture(scope="module")
def pruned_search(tmp_path_factory, words_file):
    """6 trials of 400 steps, one at a time, median pruner from step 100 after 1 finished trial. With this seed
    the lrs are 0.5, 1e-5, 0.5, 1e-5, 0.5, 1e-5 (TPE's random start-up draws, the same whatever the losses), so
    each trial with lr 1e-5 (dev ~3.3 against ~2.8) is pruned at its first evaluation."""
    cwd = tmp_path_factory.mktemp("pruned")
    sweep = cwd / "search"
    args = search_args(
        sweep,
        words_file,
        "train.steps=400",
        "train.eval_every=100",
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.pruner=median",
        "hydra.sweeper.min_resource=100",
        "hydra.sweeper.min_trials=1",
        "hydra.sweeper.sampler.seed=10",
    )
    r = run_cli(*args, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return sweep, r


def _jobs(sweep: Path) -> dict[int, Path]:
    return {int(p.name.split("_")[0]): p for p in sweep.iterdir() if p.is_dir() and (p / ".hydra").is_dir()}


@pytest.mark.slow
def test_a_single_run_never_imports_optuna(tmp_path, words_file):
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['makemore.run', 'train.steps=20', 'samples=0', 'data.path={words_file}']\n"
        "runpy.run_module('makemore.run', run_name='__main__')\n"
        "assert 'optuna' not in sys.modules, 'a single run imported optuna'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    assert (next((tmp_path / "outputs" / "runs").iterdir()) / "metrics.json").is_file()


@pytest.mark.slow
def test_a_pruned_trial_is_recorded_as_pruned_everywhere(pruned_search):
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    sweep, r = pruned_search
    jobs = _jobs(sweep)
    assert sorted(jobs) == list(range(6))
    records = {n: metrics(job) for n, job in jobs.items()}
    lrs = {n: yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["schedule"]["lr"] for n, job in jobs.items()}
    assert lrs[0] == 0.5 and records[0]["status"] == "ok"
    pruned = [n for n, m in records.items() if m["status"] == "pruned"]
    assert sorted(pruned) == [1, 3, 5] and all(lrs[n] == 0.00001 for n in pruned)
    assert all(m["status"] == "ok" for n, m in records.items() if lrs[n] == 0.5)
    for n in pruned:
        m = records[n]
        assert m["steps"] == 100
        assert m["error"] == f"stopped at step 100 by the median pruner (dev loss {m['dev_loss']:.4f})"
        assert m["dev_loss"] > records[0]["dev_loss"] + 0.2
        assert (jobs[n] / "checkpoint.pt").is_file() and (jobs[n] / "loss.png").is_file()
        acc = EventAccumulator(str(jobs[n]), size_guidance={"tensors": 0, "scalars": 0})
        acc.Reload()
        end = plugin_data_pb2.HParamsPluginData.FromString(
            acc.PluginTagToContent("hparams")[metadata.SESSION_END_INFO_TAG]
        )
        assert end.session_end_info.status == api_pb2.STATUS_UNKNOWN  # TensorBoard: neither success nor failure
        assert [e.step for e in acc.Scalars("loss/dev")] == [100]
    rows = (sweep / "results.md").read_text().splitlines()
    assert sum("| pruned: stopped at step 100 by the median pruner" in row for row in rows) == len(pruned)
    csv_lines = (sweep / "results.csv").read_text().splitlines()
    assert sum(",pruned," in line for line in csv_lines) == len(pruned)
    assert f"{6 - len(pruned)}/6 jobs finished, {len(pruned)} pruned" in r.stdout
    # Optuna's own record, read back from the study in the sweep dir
    study = optuna.load_study(study_name="makemore", storage=search.open_storage(str(sweep / "optuna.journal")))
    assert {t.number for t in study.trials if t.state == TrialState.PRUNED} == set(pruned)
    assert {t.number for t in study.trials if t.state == TrialState.COMPLETE} == set(range(6)) - set(pruned)
    assert study.trials[0].intermediate_values == {
        100: pytest.approx(study.trials[0].intermediate_values[100]),
        200: pytest.approx(study.trials[0].intermediate_values[200]),
        300: pytest.approx(study.trials[0].intermediate_values[300]),
        400: pytest.approx(records[0]["dev_loss"]),
    }
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(m["dev_loss"] for m in records.values() if m["status"] == "ok"))
    assert best["best_params"]["schedule.lr"] == 0.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
def test_optuna_dashboard_serves_the_study_of_a_search(pruned_search):
    pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed: pip install -e '.[dashboard]'")
    sweep, _ = pruned_search
    exe = Path(sys.executable).with_name("optuna-dashboard")
    port = _free_port()
    server = subprocess.Popen(
        [str(exe), str(sweep / "optuna.journal"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        studies = None
        for _ in range(120):
            try:
                studies = _get(f"{base}/api/studies")
                break
            except OSError:
                time.sleep(0.5)
        assert studies is not None, "the dashboard did not answer"
        (summary,) = studies["study_summaries"]
        assert summary["study_name"] == "makemore"
        detail = _get(f"{base}/api/studies/{summary['study_id']}?after=0")
        states = [t["state"] for t in detail["trials"]]
        assert len(states) == 6 and "Pruned" in states and "Complete" in states
        first = detail["trials"][0]
        assert [v["step"] for v in first["intermediate_values"]] == [100, 200, 300, 400]
        assert (urllib.request.urlopen(f"{base}/dashboard", timeout=10).status) == 200
    finally:
        server.terminate()
        server.wait(10)


def _log_times(job: Path) -> tuple[datetime, datetime]:
    """A job's first and last log line's time (Hydra's `[YYYY-mm-dd HH:MM:SS,mmm]` prefix)."""
    lines = [line for line in (job / "run.log").read_text().splitlines() if line.startswith("[")]
    stamp = lambda line: datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")  # noqa: E731
    return stamp(lines[0]), stamp(lines[-1])


@pytest.mark.slow
def test_a_short_trial_frees_its_slot_at_once_in_a_real_search(tmp_path, words_file):
    """Two trials at once through the joblib launcher; with this seed trials 0, 1, 2 train 40000, 100 and 100
    steps: trial 2 starts when trial 1 ends, while trial 0 still trains (no batch barrier)."""
    sweep = tmp_path / "search"
    args = search_args(sweep, words_file, "train.steps=choice(100,40000)", "hydra.sweeper.pruner=none")
    args[args.index("schedule.lr=choice(0.5,0.00001)")] = "schedule.lr=0.3"
    extra = ("hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2", "hydra.sweeper.sampler.seed=8")
    extra += ("hydra.launcher.n_jobs=2",)  # two processes even where the tests are pinned to one core
    r = run_cli(*args, *extra, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    jobs = _jobs(sweep)
    steps = {n: metrics(job)["steps"] for n, job in jobs.items()}
    assert (steps[0], steps[1]) == (40000, 100)
    (start0, end0), (_, end1), (start2, _) = (_log_times(jobs[n]) for n in range(3))
    assert end1 <= start2 < end0
    assert "(2 parallel jobs)" in (jobs[2] / "run.log").read_text()


@pytest.mark.slow
def test_an_interrupted_search_continues_with_the_same_command(tmp_path, words_file):
    """SIGKILL the search (its process group: the sweeper and its job) while trial 1 trains, then run the same
    command: trial 0 is kept as it was, trial 1 is marked interrupted and its point runs again, and the study
    ends with its 4 trials."""
    sweep = tmp_path / "search"
    args = search_args(
        sweep,
        words_file,
        "train.steps=3000",
        "train.eval_every=500",
        "train.checkpoint_every=3000",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.pruner=none",  # every trial trains its 3000 steps: time to interrupt one
    )
    args[args.index("schedule.lr=choice(0.5,0.00001)")] = "schedule.lr=choice(0.5,0.3)"
    cmd = [sys.executable, "-m", "makemore.run", *args]
    # its own process group, so that one SIGKILL reaches the sweeper and the job it runs
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    first = subprocess.Popen(cmd, cwd=tmp_path, start_new_session=True, **quiet)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and first.poll() is None:
        jobs = _jobs(sweep) if sweep.is_dir() else {}
        # trial 1 has started once Hydra has written its record (.hydra/ comes just after run.log): a job killed
        # before that has no record, and the results table (report.find_jobs) would not list it
        if 0 in jobs and (jobs[0] / "metrics.json").is_file() and 1 in jobs and (jobs[1] / "run.log").is_file():
            if (jobs[1] / ".hydra" / "overrides.yaml").is_file():
                break
        time.sleep(0.05)
    assert first.poll() is None, "the search ended before it could be interrupted"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    kept = (jobs[0] / "metrics.json").stat().st_mtime_ns

    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "interrupted, to run again as new trials: #1" in r.stdout + r.stderr
    study = optuna.load_study(study_name="makemore", storage=search.open_storage(str(sweep / "optuna.journal")))
    states = [t.state for t in study.trials]
    assert states[1] == TrialState.FAIL and len(states) == 5
    assert sum(s == TrialState.COMPLETE for s in states) == 4
    rerun = study.trials[2]  # queued when the command ran again, so asked first
    assert rerun.user_attrs["rerun_of"] == 1 and rerun.params == study.trials[1].params
    jobs = _jobs(sweep)
    assert sorted(jobs) == [0, 1, 2, 3, 4]
    assert (jobs[0] / "metrics.json").stat().st_mtime_ns == kept  # not trained again
    assert metrics(jobs[1])["error"].startswith("interrupted")
    assert "/5 jobs finished" in r.stdout, r.stdout[-1200:]  # the table lists the interrupted trial too
    assert "A new study created" not in r.stdout + r.stderr


@pytest.mark.slow
def test_the_widened_search_runs_its_conditional_keys_as_overrides(tmp_path, words_file):
    """hparams_search=mlp_wider, tiny: each job's overrides hold the keys of the conditions its trial met
    (its optimizer's lr and weight decay, the hidden width of its depth) and no others;
    model.hidden fixed on the command line is sampled in no trial; results and Optuna name override keys."""
    sweep = tmp_path / "search"
    args = ["hparams_search=mlp_wider", *TINY, "train.steps=60", "train.eval_every=30", f"data.path={words_file}"]
    args += [f"hydra.sweep.dir={sweep}", "hydra.sweeper.n_trials=4", "hydra.sweeper.min_resource=30"]
    r = run_cli(*args, "hydra.sweeper.sampler.n_startup_trials=4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    jobs = _jobs(sweep)
    assert len(jobs) == 4
    for job in jobs.values():
        listed = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        over = dict(o.split("=", 1) for o in listed)
        cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        assert cfg["model"]["hidden"] == 16 and [o for o in listed if o.startswith("model.hidden=")] == [
            "model.hidden=16"
        ]
        lr = float(over["schedule.lr"])
        if over["optimizer"] == "sgd":
            assert 0.03 <= lr <= 0.3 and "schedule.min_lr" not in over
        else:
            assert 0.0005 <= lr <= 0.01 and cfg["schedule"]["min_lr"] == 1e-5
        assert cfg["optimizer"]["name"] == over["optimizer"]
        assert cfg["optimizer"]["weight_decay"] == float(over["optimizer.weight_decay"])
        assert "train.precision" not in over  # fp32 on any CPU
        assert metrics(job)["status"] in ("ok", "pruned")
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_params"]
    assert "schedule.lr" in best and not any("|" in k for k in best)
    study = optuna.load_study(study_name="mlp_wider", storage=search.open_storage(str(sweep / search.JOURNAL)))
    assert any(" | optimizer=" in name for t in study.trials for name in t.params)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["mlp", "wavenet", "rnn", "gru", "bow", "transformer"])
def test_every_family_runs_in_a_two_trial_search(tmp_path, words_file, family):
    """hparams_search=families with the family fixed on the command line: its conditional keys join the space
    (model.dropout too, for every family that has it), the other families' are never sampled."""
    sweep = tmp_path / "search"
    args = ["hparams_search=families", f"model={family}", "train.steps=40", "train.eval_every=20", "samples=0"]
    args += [f"data.path={words_file}", f"hydra.sweep.dir={sweep}", "hydra.sweeper.n_trials=2", "hydra/launcher=basic"]
    args += ["hydra.sweeper.min_resource=20", "hydra.sweeper.sampler.n_startup_trials=2"]
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    jobs = _jobs(sweep)
    assert len(jobs) == 2
    for job in jobs.values():
        cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        assert cfg["model"]["kind"] == family and metrics(job)["status"] in ("ok", "pruned")
        over = dict(o.split("=", 1) for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))
        if family != "bow":  # every family with model.dropout searches it
            assert cfg["model"]["dropout"] == float(over["model.dropout"]) in (0.0, 0.1, 0.2)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_params"]
    assert "model" not in best and "schedule.lr" in best


@pytest.mark.slow
def test_a_search_whose_study_file_was_deleted_is_one_line_and_touches_no_job(tmp_path, words_file):
    sweep = tmp_path / "search"
    args = search_args(sweep, words_file, "train.steps=100", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1")
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    kept = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file() and p.name != "optuna.journal"}
    (sweep / "optuna.journal").unlink()
    r = run_cli(*args, cwd=tmp_path)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode != 0 and "Traceback" not in r.stdout + r.stderr
    assert len(lines) == 1 and f"the study storage {sweep / 'optuna.journal'} is missing" in lines[0], r.stderr
    assert {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()} == kept
