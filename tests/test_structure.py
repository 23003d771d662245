"""Fast, in-process checks of the rules that several modules share: the sweep layout, the thread policy, and
which module may import which."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from makemore import device
from makemore.config import JOB_DEPTHS, MAX_NAME, SEARCH_SWEEPER, job_name, sweep_root
from makemore.model import build
from makemore.report import find_jobs

PACKAGE = Path(__file__).resolve().parents[1] / "makemore"


def test_no_module_imports_the_cli_module():
    """run.py only composes: everything it uses lives elsewhere, so nothing needs to import it."""
    for path in PACKAGE.glob("*.py"):
        if path.name == "run.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
                assert "run" not in names and node.module != "makemore.run", f"{path.name} imports the CLI module"
            elif isinstance(node, ast.Import):
                assert all(a.name != "makemore.run" for a in node.names), path.name


@pytest.mark.parametrize(
    "dirname, overrides, num, sweeper, expected",
    [
        ("model.emb=2,model.hidden=8", ["model.emb=2", "model.hidden=8"], 0, "Basic", "model.emb=2,model.hidden=8"),
        ("model.hidden=8", ["model.hidden=8", "seed=3"], 1, "BasicSweeper", "model.hidden=8/seed=3"),
        ("", [], 0, "BasicSweeper", "defaults"),
        ("model.emb=2", ["model.emb=2"], 7, SEARCH_SWEEPER, "7_model.emb=2"),  # a search may repeat a point:
        # the trial number leads
    ],
)
def test_job_names(dirname, overrides, num, sweeper, expected):
    assert job_name(dirname, overrides, num, sweeper) == expected


def test_a_long_job_name_is_shortened_and_stays_distinct():
    """A widened search's overrides run past a file name's 255 bytes: the name keeps its start and a hash."""
    long = ",".join(f"optimizer.weight_decay=0.{i}{'7' * 16},schedule.lr=0.00{i}{'3' * 16}" for i in range(5))
    names = {job_name(long + f",model.emb={e}", [], 12, SEARCH_SWEEPER) for e in (16, 24)}
    assert len(names) == 2
    for name in names:
        assert len(name) == MAX_NAME and name.startswith("12_optimizer.weight_decay=0.0777")
    name, _, seed = job_name(long, [long, "seed=3"], 0, "BasicSweeper").partition("/")
    assert len(name) == MAX_NAME and "~" in name and seed == "seed=3"


def _job(root: Path, rel: str, mode: str = "MULTIRUN") -> Path:
    job = root / rel
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"mode": mode}}))
    (job / ".hydra" / "overrides.yaml").write_text("[]\n")
    return job


def test_the_report_finds_jobs_at_the_layouts_depths_only(tmp_path):
    sweep = tmp_path / "sweep"
    plain = _job(sweep, "model.emb=2")
    seeded = _job(sweep, "model.emb=4/seed=1")
    _job(sweep, "stray_single_run", mode="RUN")  # a single run that happens to lie there
    _job(sweep, "a/b/too_deep")
    assert JOB_DEPTHS == (1, 2)
    assert find_jobs(sweep) == sorted([plain, seeded])
    assert sweep_root(plain) == sweep_root(seeded) == sweep
    # a dir holding whole sweeps finds their jobs one level deeper, whose root is not that dir
    parent = tmp_path / "multirun"
    other = _job(parent, "2026-11-22_10-00-00_1/model.emb=2")
    assert find_jobs(parent) == [other] and sweep_root(other) == parent / "2026-11-22_10-00-00_1"


def test_threads_share_the_cores_among_parallel_jobs(monkeypatch):
    monkeypatch.setattr(device, "cores", lambda: 8)
    assert device.threads(0, 1) == 8 and device.threads(0, 3) == 2 and device.threads(0, 16) == 1
    assert device.threads(5, 3) == 5  # device.threads set: taken as it is


def test_small_steps_train_on_one_thread_large_ones_on_the_jobs_share():
    lecture = build("mlp", 27, block_size=3, emb=10, hidden=200)
    best = build("mlp", 27, block_size=6, emb=32, hidden=1000, norm="layer")
    assert lecture.step_macs(32) < device.PARALLEL_STEP_MACS < best.step_macs(256)
    assert device.training_threads(0, 4, lecture.step_macs(32)) == 1  # a second thread costs more than it brings
    assert device.training_threads(0, 4, best.step_macs(256)) == 4
    assert device.training_threads(3, 4, lecture.step_macs(32)) == 3
    assert build("bigram", 27, block_size=1, emb=1, hidden=1).step_macs(32) == 0
