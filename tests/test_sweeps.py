"""Multirun sweeps through subprocesses with tiny step counts: joblib grids, failures, reports,
Optuna, submitit_local."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import events, metrics, run_cli, run_module

from makemore.device import cores

pytestmark = pytest.mark.slow  # every test here runs the commands in subprocesses


TINY = ("model.emb=2", "train.steps=200", "train.eval_every=100", "train.checkpoint_every=200", "samples=2")


def sweep_dirs(cwd: Path):
    return sorted((cwd / "outputs" / "multirun").iterdir())


def md_rows(sweep: Path):
    return [
        row
        for row in (sweep / "results.md").read_text().splitlines()
        if row.startswith("| ") and not row.startswith("| job #")
    ]


@pytest.fixture(scope="module")
def grid(tmp_path_factory, words_file):
    cwd = tmp_path_factory.mktemp("grid")
    r = run_cli("-m", "model.hidden=8,16", "model.emb=2,4", *TINY[1:], f"data.path={words_file}", cwd=cwd)
    assert r.returncode == 0, r.stderr
    (sweep,) = sweep_dirs(cwd)
    return sweep, r


def test_grid_runs_every_point_in_its_own_named_dir(grid):
    sweep, _ = grid
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == sorted(
        f"model.emb-{e}+model.hidden-{h}+samples-2+train.checkpoint_every-200+train.eval_every-100+train.steps-200"
        for e in (2, 4)
        for h in (8, 16)
    )  # data.path is left out of the names
    for job in jobs:
        m = metrics(sweep / job)
        assert m["status"] == "ok" and m["steps"] == 200
        assert len(list((sweep / job).glob("events.out.tfevents.*"))) == 1
        # as many jobs at once as cores (n_jobs=-1): each evaluates on cores // jobs = 1 thread and trains these
        # tiny steps on 1
        n = min(4, cores())
        line = f"torch threads: 1 for training, 1 for evaluation ({n} parallel job{'s' if n > 1 else ''})"
        assert line in (sweep / job / "run.log").read_text()


def test_grid_table_best_first_and_heatmap(grid):
    sweep, r = grid
    rows = md_rows(sweep)
    assert len(rows) == 4
    devs = [float(row.split("|")[5]) for row in rows]
    assert devs == sorted(devs)
    # the first column is each job's number (the console's [#n]), not its rank: Hydra numbers the grid's points
    # in the order of the overrides, emb varying fastest
    nums = {int(row.split("|")[1]): row.split("|")[2].strip() for row in rows}
    assert sorted(nums) == [0, 1, 2, 3] and "model.emb=4" in nums[1] and "model.hidden=16" in nums[2]
    assert "model.emb=" in rows[0] and "model.hidden=" in rows[0]
    assert (sweep / "heatmap.png").stat().st_size > 5000
    csv_lines = (sweep / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("job,num,model.emb,model.hidden,params,train_loss") and len(csv_lines) == 5
    assert "4/4 jobs finished" in r.stdout


def test_report_rebuilds_a_partial_sweep(grid, tmp_path):
    sweep, _ = grid
    copy = tmp_path / "partial"
    shutil.copytree(sweep, copy)
    victim = sorted(p for p in copy.iterdir() if p.is_dir())[0]
    (victim / "metrics.json").unlink()  # as if that job were still running or had been killed
    for f in ("results.md", "results.csv", "heatmap.png"):
        (copy / f).unlink()
    r = run_module("makemore.report", str(copy), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = md_rows(copy)
    assert len(rows) == 4 and rows[-1].rstrip().endswith("missing |")
    assert "3/4 jobs finished" in r.stdout and (copy / "heatmap.png").is_file()
    bad = run_module("makemore.report", str(tmp_path / "nope"), cwd=tmp_path)
    assert bad.returncode != 0 and "not a directory" in bad.stderr


def test_failed_points_are_recorded_and_the_rest_finishes(tmp_path, words_file):
    r = run_cli(
        "-m",
        "model.hidden=8,0",
        "schedule.lrs=[0.1],[1e30]",
        "schedule.milestones=[]",
        *TINY,
        f"data.path={words_file}",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    (sweep,) = sweep_dirs(tmp_path)
    rows = md_rows(sweep)
    assert len(rows) == 4
    assert " ok |" in rows[0]
    assert sum("diverged" in row for row in rows) == 1
    assert sum("failed: model.hidden must be" in row for row in rows) == 2


def test_two_sweeps_started_together_never_share_a_dir(tmp_path, words_file):
    cmd = [sys.executable, "-m", "makemore.run", "-m", "model.hidden=8", *TINY, f"data.path={words_file}"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=240) == 0
    sweeps = sweep_dirs(tmp_path)
    assert len(sweeps) == 2
    for s in sweeps:
        assert len(list(s.rglob("metrics.json"))) == 1


def test_seed_sweep_and_replicas_compose(tmp_path, words_file):
    r = run_cli("-m", "seed=1,2", "model.hidden=8", "train.replicas=2", *TINY, f"data.path={words_file}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (sweep,) = sweep_dirs(tmp_path)
    found = sorted(str(p.parent.relative_to(sweep)) for p in sweep.rglob("metrics.json"))
    assert len(found) == 2 and found[0].endswith("/seed-1") and found[1].endswith("/seed-2")
    rows = md_rows(sweep)
    assert len(rows) == 2 and all(" ± " in row for row in rows)  # mean ± std over the replicas


def test_optuna_search_records_best_params(tmp_path, words_file):
    """hparams_search=optuna with its study in a database given on the command line (the default is a journal
    file in the sweep dir, tests/test_search.py)."""
    db = tmp_path / "study.db"
    r = run_cli(
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        *TINY[1:],
        f"hydra.sweeper.storage=sqlite:///{db}",
        f"data.path={words_file}",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    sweep = tmp_path / "outputs" / "search" / "makemore"  # the preset's stable dir: the command finds it again
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {
        "model.emb",
        "model.hidden",
        "model.block_size",
        "train.batch_size",
        "schedule.lr",
    }
    assert len(list(sweep.rglob("metrics.json"))) == 4 and len(md_rows(sweep)) == 4
    ok = [metrics(p.parent) for p in sweep.rglob("metrics.json") if metrics(p.parent)["status"] == "ok"]
    assert best["best_value"] == pytest.approx(min(m["dev_loss"] for m in ok))
    assert db.is_file() and not (sweep / "optuna.journal").exists() and "alembic" not in r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "\x1b[" not in out and "A new study created" in out  # Optuna's lines, without colour codes


def test_a_sweep_over_data_files_is_refused_before_any_job(tmp_path, words_file):
    """data.path is left out of job dir names, so two files' jobs would share a dir."""
    r = run_cli("-m", f"data.path={words_file},{words_file}", *TINY, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: a sweep cannot vary `data.path`")
    assert not list(tmp_path.rglob("metrics.json"))


def test_the_best_model_search_runs(tmp_path, words_file):
    """hparams_search=mlp_wide, the search behind experiment=best, with 2 trials of 20 steps."""
    r = run_cli(
        "hparams_search=mlp_wide",
        "hydra.sweeper.n_trials=2",
        "train.steps=20",
        "train.eval_every=20",
        "train.checkpoint_every=20",
        f"data.path={words_file}",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    sweep = tmp_path / "outputs" / "search" / "mlp_wide"
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {
        "model.block_size",
        "model.emb",
        "model.hidden",
        "model.norm",
        "train.batch_size",
        "schedule.lr",
        "optimizer.weight_decay",
    }
    assert len(md_rows(sweep)) == 2
    # trials run one at a time (hydra.sweeper.n_jobs=1), so each may use every core
    logs = [p.read_text() for p in sweep.rglob("run.log")]
    assert len(logs) == 2 and all("(1 parallel job)" in text for text in logs)


def test_submitit_local_launcher(tmp_path, words_file):
    r = run_cli(
        "-m", "hydra/launcher=submitit_local", "model.hidden=8,16", *TINY, f"data.path={words_file}", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    (sweep,) = sweep_dirs(tmp_path)
    assert len(list(sweep.rglob("metrics.json"))) == 2 and len(md_rows(sweep)) == 2
    assert (sweep / ".submitit").is_dir()


def test_every_family_runs_in_a_grid_and_tensorboard_lists_them_all(tmp_path, words_file):
    """One sweep over the families, two seeds each: every job trains, samples and records the same targets; the
    results table and TensorBoard's HParams cover them all, each family's keys beside the others' (null)."""
    kinds = ("wavenet", "rnn", "gru", "bow", "transformer")
    r = run_cli("-m", f"model={','.join(kinds)}", "seed=1,2", "model.emb=8", "optimizer=adamw",
                "schedule.lrs=[0.003]", "schedule.milestones=[]", *TINY[1:], f"data.path={words_file}",
                cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    (sweep,) = sweep_dirs(tmp_path)
    jobs = sorted(p.parent for p in sweep.rglob("metrics.json"))
    assert len(jobs) == 10 and len(md_rows(sweep)) == 10
    records = [metrics(j) for j in jobs]
    assert all(m["status"] == "ok" and m["dev_loss"] < 3.3 for m in records)
    assert len({json.dumps(m["examples"], sort_keys=True) for m in records}) == 1  # the same targets everywhere
    assert all(len((j / "samples.txt").read_text().splitlines()) == 2 for j in jobs)
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    acc = events(jobs[0])
    info = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")[metadata.SESSION_START_INFO_TAG]
    )
    hp = info.session_start_info.hparams
    assert {"model.kind", "model.n_layer", "model.hidden", "model.dropout"} <= set(hp)
