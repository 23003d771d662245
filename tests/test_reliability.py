"""Nothing lost when work is interrupted or mistyped: bad input refused in one line with nothing left behind,
`resume=PATH` on a run dir, and a grid killed half-way that its own command continues."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import QUICK, metrics, run_cli, run_dirs

from makemore import checkpoint
from makemore.results import record

pytestmark = pytest.mark.slow  # every test here runs the commands in subprocesses


def one_line(r: subprocess.CompletedProcess) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    return lines[0]


BAD_INPUTS = [
    (("model.hiden=3",), ("unknown key model.hiden", "did you mean model.hidden?")),
    (("+model.hiden=3",), ("unknown key model.hiden", "did you mean model.hidden?")),  # Hydra's own hint
    (("train.stepz=3",), ("unknown key train.stepz", "did you mean train.steps?")),
    (("experiment=lecutre",), ("experiment=lecutre: no such option", "lecture", "best_adamw")),
    (("hparams_search=nonexistent",), ("hparams_search=nonexistent: no such option", "mlp_wide")),
    (("model=mlpp",), ("model=mlpp: no such option", "wavenet")),
    (("model.hidden=abc",), ("model.hidden", "abc")),
    (("resume=true",), ("resume=true: there is no checkpoint to continue",)),
    (("resume=nowhere",), ("resume=nowhere: no such dir",)),
    (
        ("experiment=transformer", "schedule=cosine"),
        (
            "unknown key schedule.lrs: a key of schedule=step",
            "this run has schedule=cosine",
            "schedule=cosine has: name",
        ),
    ),
    (("schedule.lrz=[1]",), ("unknown key schedule.lrz", "did you mean schedule.lrs?", "schedule=step has")),
    (("-m", "model.hiden=3,4"), ("unknown key model.hiden", "did you mean model.hidden?")),
    (("-m", "+model.hiden=3,4"), ("unknown key model.hiden",)),
    (("-m", "model.layers=1,2", "+model.hiden=3"), ("unknown key model.hiden",)),
    (("-m", "experiment=lecutre"), ("experiment=lecutre: no such option",)),
    (("-m", "model=mlp,mlpp"), ("model=mlpp: no such option",)),
]


@pytest.mark.parametrize("args, needles", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, words_file, args, needles):
    flags = [a for a in args if a.startswith("-")]
    rest = [a for a in args if not a.startswith("-")]
    r = run_cli(*flags, *QUICK, "train.steps=20", f"data.path={words_file}", *rest, cwd=tmp_path)
    line = one_line(r)
    assert all(n in line for n in needles), line
    assert not (tmp_path / "outputs").exists(), sorted(p.name for p in (tmp_path / "outputs").rglob("*"))


def test_resume_by_the_run_dir_alone(tmp_path, words_file):
    """`resume=outputs/runs/<name>` as typed (the auto-named dir takes no quotes): the run's own overrides, a
    longer train.steps, and the same result as a run trained that long at once; a changed model key refused."""
    args = (*QUICK, "train.steps=200", f"data.path={words_file}")
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    (run,) = run_dirs(tmp_path)
    assert not {"=", ",", "'", " "} & set(run.name), run.name
    path = str(run.relative_to(tmp_path))
    kept = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    line = one_line(run_cli(f"resume={path}", "model.hidden=32", cwd=tmp_path))
    assert "model.hidden=16, this run has model.hidden=32" in line and "resume with the same model.hidden" in line
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == kept  # nothing touched
    r = run_cli(f"resume={path}", "train.steps=400", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "at step 200" in r.stdout + r.stderr and run_dirs(tmp_path) == [run]
    once = run_cli(*QUICK, "train.steps=400", f"data.path={words_file}", "hydra.run.dir=once", cwd=tmp_path)
    assert once.returncode == 0, once.stderr
    a, b = metrics(run), metrics(tmp_path / "once")
    assert (a["steps"], a["train_loss"], a["dev_loss"]) == (b["steps"], b["train_loss"], b["dev_loss"])
    assert not list(run.glob("*.tmp"))


GRID = ("model.emb=2,4", "model.hidden=8,16", "train.steps=3000", "train.eval_every=1000",
        "train.checkpoint_every=100", "samples=0", "hydra.launcher.n_jobs=1")  # fmt: skip


def kill_grid_midway(cwd: Path, args) -> tuple[list[Path], list[Path]]:
    """Start the grid, SIGKILL its whole process group once one job has finished and the next has a checkpoint;
    returns (finished, interrupted) job dirs."""
    cmd = [sys.executable, "-m", "makemore.run", *args]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    deadline, done, cut = time.time() + 300, [], []
    while time.time() < deadline and proc.poll() is None and not (done and cut):
        jobs = [d for d in (cwd / "cut").glob("*") if (d / ".hydra").is_dir()]
        done = [d for d in jobs if (d / "metrics.json").exists()]
        cut = [d for d in jobs if (d / checkpoint.FILENAME).exists() and not (d / "metrics.json").exists()]
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and done and cut, "the grid finished before it could be killed"
    return done, cut


@pytest.mark.parametrize("how", ["sweep_dir", "resume"])
def test_a_killed_grid_continues_with_its_own_command(tmp_path, words_file, how):
    """Finished jobs skipped (their record kept), the interrupted one resumed, a failed one rerun; every job ends
    bit-identical to an uninterrupted grid, and the table covers all four."""
    args = ("-m", *GRID, f"data.path={words_file}")
    done, cut = kill_grid_midway(tmp_path, (*args, "hydra.sweep.dir=cut"))
    kept = (done[0] / "metrics.json").read_bytes()
    cut_at = checkpoint.load(cut[0])["step"]
    if how == "sweep_dir":
        again = run_cli(*args, "hydra.sweep.dir=cut", cwd=tmp_path)
    else:  # also: a job that failed is rerun
        record.write(done[0], record.failed("RuntimeError: a failure of the first session"))
        again = run_cli("resume=cut", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    out = again.stdout + again.stderr
    assert f"at step {cut_at}" in out and "4/4 jobs finished" in out
    if how == "sweep_dir":
        assert (done[0] / "metrics.json").read_bytes() == kept and "skipped" in out
    assert run_cli(*args, "hydra.launcher.n_jobs=2", "hydra.sweep.dir=full", cwd=tmp_path).returncode == 0
    for job in (tmp_path / "full").glob("model.*"):
        a, b = metrics(job), metrics(tmp_path / "cut" / job.name)
        assert (a["status"], a["train_loss"], a["dev_loss"]) == (b["status"], b["train_loss"], b["dev_loss"])
    table = (tmp_path / "cut" / "results.md").read_text()
    assert table.count("| ok |") == 4
    assert not list((tmp_path / "cut").rglob("*.tmp"))
