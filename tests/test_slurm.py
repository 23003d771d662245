"""Sweeps through `hydra/launcher=slurm` on a real SLURM cluster: the one-node cluster that
.ci/slurm-single-node.sh starts (.ci/run does, as root). Where no cluster answers, these tests skip and say
why; with MAKEMORE_REQUIRE_SLURM=1 (.ci/run sets it once its cluster is up) they fail instead."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CONF, metrics, run_cli
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException

from makemore.hydra_app import register_configs, register_resolvers
from makemore.search import open_storage

pytestmark = pytest.mark.slow  # real SLURM jobs, each a Python that imports torch

# one core and 1 GB per job, in the cluster's default partition
SLURM = (
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=5",
)
TINY = ("train.steps=200", "train.eval_every=50", "train.checkpoint_every=200", "samples=2")
START = "start one with: sudo .ci/slurm-single-node.sh"


def missing_cluster() -> str | None:
    """Why no SLURM cluster can take jobs here, or None when one can."""
    if shutil.which("sinfo") is None:
        return "no SLURM here: sinfo is not installed"
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "no SLURM cluster answers: sinfo timed out"
    if r.returncode != 0:
        return f"no SLURM cluster answers: {(r.stderr.strip().splitlines() or ['sinfo failed'])[-1]}"
    states = r.stdout.split()
    if not {"idle", "mix"} & set(states):  # idle* or down: not responding
        return f"no SLURM node takes jobs (node states: {', '.join(states) or 'none'})"
    return None


@pytest.fixture(scope="module")
def cluster():
    why = missing_cluster()
    if why and os.environ.get("MAKEMORE_REQUIRE_SLURM") == "1":
        pytest.fail(f"{why}, though MAKEMORE_REQUIRE_SLURM=1 says a cluster was started for these tests")
    if why:
        pytest.skip(f"{why}; {START}")


def sweep_of(cwd: Path) -> Path:
    (sweep,) = (cwd / "outputs" / "multirun").iterdir()
    return sweep


def slurm_jobs(sweep: Path) -> dict[str, str]:
    """{SLURM job id: final state} of the jobs submitit submitted from this sweep, as sacct reports them.
    The sweep ends when the jobs' results are written, a moment before SLURM ends them and sends the records to
    slurmdbd: wait for that, up to a minute."""
    # a grid's array: <array>_<task> (and <array>, its script's dir); a search's trials: <job>, one job each
    names = [p.name for p in (sweep / ".submitit").iterdir() if re.fullmatch(r"\d+(_\d+)?", p.name)]
    ids = sorted(set(names) - {n.split("_")[0] for n in names if "_" in n})
    arrays = sorted({i.split("_")[0] for i in ids})
    cmd = ["sacct", "-n", "-X", "-P", "-o", "JobID,State,AllocCPUS", "-j", ",".join(arrays)]
    for _ in range(60):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        rows = [line.split("|") for line in r.stdout.splitlines()]
        states = {job: state for job, state, _ in rows}
        if sorted(states) == ids and not {"PENDING", "RUNNING", "COMPLETING"} & set(states.values()):
            break
        time.sleep(1)
    assert sorted(states) == ids, (states, ids)
    assert all(cpus == "1" for _, _, cpus in rows), rows  # hydra.launcher.cpus_per_task=1
    return states


def md_rows(sweep: Path) -> list[str]:
    lines = (sweep / "results.md").read_text().splitlines()
    return [row for row in lines if row.startswith("| ") and not row.startswith("| job #")]


def test_a_grid_runs_as_slurm_jobs(cluster, tmp_path, words_file):
    r = run_cli(
        "-m", *SLURM, "model.hidden=8,16", "model.emb=2,4", *TINY, f"data.path={words_file}", cwd=tmp_path, timeout=600
    )
    assert r.returncode == 0, r.stderr
    sweep = sweep_of(tmp_path)
    # one SLURM array of 4 tasks, each finished in the scheduler's own records
    states = slurm_jobs(sweep)
    assert len(states) == 4 and set(states.values()) == {"COMPLETED"}, states
    # the jobs ran this Python (submitit's sbatch script runs the launching process's interpreter)
    (script,) = (sweep / ".submitit").glob("*/*_submission.sh")
    assert f"{sys.executable} -u -m submitit.core._submit" in script.read_text()
    jobs = [p.parent for p in sweep.rglob("metrics.json")]
    assert len(jobs) == 4 and all(metrics(job)["status"] == "ok" for job in jobs)
    for job in jobs:  # the job sees the one core SLURM gave it (sbatch -c 1), so evaluation takes 1 thread
        assert "torch threads: 1 for training, 1 for evaluation" in (job / "run.log").read_text()
    assert len(md_rows(sweep)) == 4 and "4/4 jobs finished" in r.stdout
    sacct_errors = [line for line in (r.stdout + r.stderr).splitlines() if "Bypassing sacct error" in line]
    assert not sacct_errors, sacct_errors  # submitit follows the jobs through sacct


def pruned_search_missing() -> str | None:
    """The pruned search needs the project's own Optuna sweeper (hydra.sweeper.pruner)."""
    register_configs()
    register_resolvers()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
            compose("config", ["hparams_search=optuna", "hydra.sweeper.pruner=median"], return_hydra_config=True)
    except HydraException as e:
        return f"hparams_search=optuna has no hydra.sweeper.pruner here (the project's Optuna sweeper): {e}"
    return None


def test_a_pruned_search_runs_as_slurm_jobs_sharing_the_study(cluster, tmp_path, words_file):
    why = pruned_search_missing()
    if why:
        pytest.skip(why.splitlines()[0])
    optuna = pytest.importorskip("optuna")
    r = run_cli(
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.pruner=median",
        *SLURM,
        *TINY,
        f"data.path={words_file}",
        cwd=tmp_path,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    sweep = tmp_path / "outputs" / "search" / "makemore"  # the preset's stable dir (hydra.sweeper.study_name)
    states = slurm_jobs(sweep)
    assert len(states) == 4 and set(states.values()) == {"COMPLETED"}, states  # a pruned trial ends normally
    assert len(md_rows(sweep)) == 4
    # the study lives in the sweep dir (a journal file), and every trial, each in its own SLURM job, reported to it
    storage = open_storage(str(sweep / "optuna.journal"))
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    finished = {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert len(study.trials) == 4 and all(t.state in finished for t in study.trials)
    assert all(t.intermediate_values for t in study.trials)


# jobs long enough to be caught mid-run, checkpointing often. Their time limit is over 10 minutes: submitit takes a
# signal in a job's last 10 minutes (or 20 % of its limit) for a timeout, which hydra.launcher.max_num_timeout=0
# does not requeue
PREEMPTIBLE = (*SLURM[:-1], "hydra.launcher.timeout_min=20", "model.hidden=8", "samples=2")
# `scontrol requeue` sends SIGTERM, which submitit's job ignores, and SIGKILL KillWait later (5 s on the cluster of
# .ci/slurm-single-node.sh): that job trains long enough (200000 steps, half a minute or more on one core) to be
# killed before it ends
INTERRUPTS = {
    "preempted": (["scancel", "--signal=USR2"], ("train.steps=50000", "train.checkpoint_every=500")),
    "requeued": (["scontrol", "requeue"], ("train.steps=200000", "train.checkpoint_every=5000")),
}


def wait_for(what: str, found, timeout: float, poll: float = 0.1):
    """found()'s first true value, polling; fail after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = found()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"no {what} after {timeout:.0f} s")


def interrupted_sweep(cwd: Path, args: tuple[str, ...], interrupt: list[str], alongside) -> tuple[Path, str]:
    """Run the sweep `args` (one job) in `cwd`; once its job has written a checkpoint, run `interrupt + [job id]`,
    then `alongside()` while the sweep finishes. Returns the job's dir and SLURM job id."""
    cwd.mkdir()
    with open(cwd / "sweep.out", "w") as out, open(cwd / "sweep.err", "w") as err:
        cmd = subprocess.Popen([sys.executable, "-m", "makemore.run", *args], cwd=cwd, stdout=out, stderr=err)
    try:
        ckpt = wait_for("checkpoint", lambda: next(cwd.glob("outputs/multirun/*/*/checkpoint.pt"), None), 300)
        (job_id,) = [p.name for p in (ckpt.parent.parent / ".submitit").iterdir() if p.name.isdigit()]
        assert not (ckpt.parent / "metrics.json").exists(), "the job ended before it could be interrupted"
        r = subprocess.run([*interrupt, job_id], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        alongside()
        assert cmd.wait(timeout=900) == 0, (cwd / "sweep.err").read_text()
    finally:
        if cmd.poll() is None:
            cmd.kill()
    assert "1/1 jobs finished" in (cwd / "sweep.out").read_text()
    return ckpt.parent, job_id


@pytest.mark.parametrize("how", INTERRUPTS)
def test_an_interrupted_slurm_job_continues_from_its_checkpoint(cluster, tmp_path, words_file, how):
    """SLURM preempts a running job (the signal it sends ahead, USR2 as submitit asks for: submitit's
    checkpointing requeues it with the same arguments), or requeues it (`scontrol requeue`: the same job runs
    again). Back in its own dir, the job sees it interrupted (a checkpoint, no metrics.json) and resumes there;
    it ends bit-identical to an uninterrupted run of the same sweep."""
    interrupt, steps = INTERRUPTS[how]
    args = ("-m", *PREEMPTIBLE, *steps, "train.eval_every=25000", f"data.path={words_file}")
    straight = tmp_path / "straight"

    def run_straight():  # while the interrupted job waits to run again (SLURM holds a requeued job 2 minutes)
        straight.mkdir()
        r = run_cli(*args, cwd=straight, timeout=900)
        assert r.returncode == 0, r.stderr

    job_dir, job_id = interrupted_sweep(tmp_path / how, args, interrupt, run_straight)
    assert slurm_jobs(job_dir.parent) == {job_id: "COMPLETED"}  # the same SLURM job, requeued, then finished
    log = (job_dir / "run.log").read_text()
    if how == "preempted":
        assert "this job is preempted" in log and f"Requeued job {job_id}" in log, log
    resumed = re.search(r"resuming from \S+ at step (\d+)", log)
    assert resumed and int(resumed.group(1)) > 0, log
    (other,) = sweep_of(straight).glob("*/metrics.json")
    got, want = metrics(job_dir), metrics(other.parent)
    assert got["status"] == want["status"] == "ok"
    assert (got["train_loss"], got["dev_loss"]) == (want["train_loss"], want["dev_loss"])
