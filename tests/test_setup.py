"""The README's two quick-start commands, `make run` and `make test`, from a fresh clone of the committed
HEAD in a temporary dir, with no virtual environment active and nothing of the project installed: the
first sets up .venv/ and trains, the second passes (on one test file here, since the whole suite would run
this test again; .ci/run runs the whole `make test` on a clean clone). Slow: it installs the project."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, metrics, run_dirs

pytestmark = pytest.mark.slow

TINY = "model.hidden=16 model.emb=4 train.steps=200 train.eval_every=100 train.checkpoint_every=100 samples=3"


def fresh_env() -> dict:
    """The caller's environment as a user without any venv has it: no VIRTUAL_ENV, no venv's bin on PATH,
    nothing inherited from an enclosing make or pytest (an outer `make test ARGS=...` would leak its ARGS)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHON", "MFLAGS")
        and not k.startswith(("MAKE", "PYTEST_"))
    }
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if p and not (Path(p).parent / "pyvenv.cfg").is_file()
    )
    return env


def make(*args: str, cwd: Path, env: dict, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    t = time.perf_counter()
    p = subprocess.run(
        ["make", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    return p, time.perf_counter() - t


def ok(p: subprocess.CompletedProcess) -> bool:
    if p.returncode:
        print(p.stdout[-6000:], p.stderr[-6000:], sep="\n")
    return p.returncode == 0


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> tuple[Path, dict]:
    env = fresh_env()
    if not shutil.which("make", path=env["PATH"]) or not shutil.which("git", path=env["PATH"]):
        pytest.skip("make and git are needed")
    python3 = shutil.which("python3", path=env["PATH"])
    if not python3:
        pytest.skip("no python3 on PATH outside a venv")
    if subprocess.run([python3, "-c", "import sys; sys.exit(sys.version_info < (3, 10))"]).returncode:
        pytest.skip("the python3 on PATH is older than 3.10")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode:
        pytest.skip("not a git checkout")
    base = tmp_path_factory.mktemp("fresh")
    dst = base / "makemore"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dst)], check=True, env=env)
    subprocess.run(["git", "-C", str(dst), "checkout", "-q", "--detach", head.stdout.strip()], check=True, env=env)
    if (ROOT.parent / "shared").is_dir():  # the layout CI has: ../shared beside the clone
        (base / "shared").symlink_to(ROOT.parent / "shared")
    assert not (dst / ".venv").exists()
    return dst, env


def test_first_command_sets_up_and_trains(clone):
    dst, env = clone
    p, seconds = make("run", f"ARGS={TINY}", cwd=dst, env=env, timeout=1800)
    print(f"make run from nothing: {seconds:.0f} s")
    assert ok(p)
    assert "pip install" in p.stdout and (dst / ".venv" / ".installed").is_file()
    site = subprocess.run(
        [str(dst / ".venv/bin/python"), "-c", "import makemore; print(makemore.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=dst / ".venv",
    ).stdout
    assert Path(site.strip()).resolve().is_relative_to(dst.resolve())  # editable, from this clone
    [run] = run_dirs(dst)
    assert (run / "checkpoint.pt").is_file()
    m = metrics(run)
    assert m["status"] == "ok" and m["steps"] == 200

    # the venv is reused: no pip, only the run
    assert "pip" not in make("-n", "run", cwd=dst, env=env, timeout=60)[0].stdout
    p, seconds = make("run", "ARGS=train.steps=0 samples=0", cwd=dst, env=env, timeout=300)
    print(f"make run again: {seconds:.1f} s")
    assert ok(p) and "pip" not in p.stdout + p.stderr
    assert len(run_dirs(dst)) == 2


def test_second_command_passes(clone):
    dst, env = clone
    p, seconds = make("test", "ARGS=tests/test_data.py", cwd=dst, env=env, timeout=1800)
    print(f"make test (tests/test_data.py): {seconds:.0f} s")
    assert ok(p)
    assert " passed" in p.stdout and " failed" not in p.stdout


def test_changed_pyproject_refreshes_the_install(clone):
    dst, env = clone
    stamp, pyproject = dst / ".venv" / ".installed", dst / "pyproject.toml"
    if not stamp.is_file():
        pytest.skip("the set-up failed (see the first test)")
    assert "pip install" not in make("-n", "test", cwd=dst, env=env, timeout=60)[0].stdout
    now = time.time()
    os.utime(stamp, (now - 60, now - 60))
    os.utime(pyproject, (now, now))
    assert "pip install" in make("-n", "test", cwd=dst, env=env, timeout=60)[0].stdout
