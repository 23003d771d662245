"""Fast, in-process checks of the rules that several modules share: the sweep layout, the thread policy, which
module may import which, and the code's shape (function sizes, one engine decision)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import yaml

from makemore import device
from makemore.hydra_app import JOB_DEPTHS, MAX_NAME, SEARCH_SWEEPER, job_name, run_dir, sweep_root
from makemore.models import MLP, Bigram
from makemore.results.sweep import find_jobs

PACKAGE = Path(__file__).resolve().parents[1] / "makemore"


def modules():
    return sorted(PACKAGE.rglob("*.py"))


def imported(path: Path) -> set[str]:
    """The modules `path` imports, absolute (relative imports resolved against its package)."""
    package = ["makemore", *path.relative_to(PACKAGE).parent.parts]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out |= {module} | {f"{module}.{a.name}" for a in node.names}
    return out


def test_no_module_imports_the_cli_module():
    """run.py only composes: everything it uses lives elsewhere, so nothing needs to import it."""
    for path in modules():
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
        # Hydra joins overrides as key-value+key-value (conf/config.yaml): names an override takes unquoted
        ("model.emb-2+model.hidden-8", ["model.emb=2", "model.hidden=8"], 0, "Basic", "model.emb-2+model.hidden-8"),
        ("model.hidden-8", ["model.hidden=8", "seed=3"], 1, "BasicSweeper", "model.hidden-8/seed-3"),
        ("", [], 0, "BasicSweeper", "defaults"),
        ("model.emb-2", ["model.emb=2"], 7, SEARCH_SWEEPER, "7_model.emb-2"),  # a search may repeat a point:
        # the trial number leads
        ("a=1,b=[1, 2]", [], 0, "Basic", "a-1_b-1_2"),  # whatever is left of = , [ ] and spaces goes
    ],
)
def test_job_names(dirname, overrides, num, sweeper, expected):
    assert job_name(dirname, overrides, num, sweeper) == expected


def test_a_long_job_name_is_shortened_and_stays_distinct():
    """A widened search's overrides run past a file name's 255 bytes: the name keeps its start and a hash."""
    long = "+".join(f"optimizer.weight_decay-0.{i}{'7' * 16}+schedule.lr-0.00{i}{'3' * 16}" for i in range(5))
    names = {job_name(long + f"+model.emb-{e}", [], 12, SEARCH_SWEEPER) for e in (16, 24)}
    assert len(names) == 2
    for name in names:
        assert len(name) == MAX_NAME and name.startswith("12_optimizer.weight_decay-0.0777")
    name, _, seed = job_name(long, [long, "seed=3"], 0, "BasicSweeper").partition("/")
    assert len(name) == MAX_NAME and "-h" in name and seed == "seed-3"


def _job(root: Path, rel: str, mode: str = "MULTIRUN") -> Path:
    job = root / rel
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"mode": mode}}))
    (job / ".hydra" / "overrides.yaml").write_text("[]\n")
    return job


def test_the_report_finds_jobs_at_the_layouts_depths_only(tmp_path):
    sweep = tmp_path / "sweep"
    plain = _job(sweep, "model.emb-2")
    seeded = _job(sweep, "model.emb-4/seed-1")
    _job(sweep, "stray_single_run", mode="RUN")  # a single run that happens to lie there
    _job(sweep, "a/b/too_deep")
    assert JOB_DEPTHS == (1, 2)
    assert find_jobs(sweep) == sorted([plain, seeded])
    assert sweep_root(plain) == sweep_root(seeded) == sweep
    # a dir holding whole sweeps finds their jobs one level deeper, whose root is not that dir
    parent = tmp_path / "multirun"
    other = _job(parent, "2026-11-22_10-00-00_1/model.emb-2")
    assert find_jobs(parent) == [other] and sweep_root(other) == parent / "2026-11-22_10-00-00_1"


def test_threads_share_the_cores_among_parallel_jobs(monkeypatch):
    monkeypatch.setattr(device, "cores", lambda: 8)
    assert device.threads(0, 1) == 8 and device.threads(0, 3) == 2 and device.threads(0, 16) == 1
    assert device.threads(5, 3) == 5  # device.threads set: taken as it is


def test_small_steps_train_on_one_thread_large_ones_on_the_jobs_share():
    lecture = MLP(27, block_size=3, emb=10, hidden=200)
    best = MLP(27, block_size=6, emb=32, hidden=1000, norm="layer")
    assert lecture.step_macs(32) < device.PARALLEL_STEP_MACS < best.step_macs(256)
    assert device.training_threads(0, 4, lecture.step_macs(32)) == 1  # a second thread costs more than it brings
    assert device.training_threads(0, 4, best.step_macs(256)) == 4
    assert device.training_threads(3, 4, lecture.step_macs(32)) == 3
    assert Bigram(27).step_macs(32) == 0


def test_run_dir_names_are_unique_in_the_same_second(tmp_path):
    from makemore import hydra_app

    parent = str(tmp_path / "runs")
    first = run_dir(parent, "2026-11-22_10-00-00", "model.hidden-37")
    assert run_dir(parent, "2026-11-22_10-00-00", "model.hidden-37") == first  # memoized within a process
    hydra_app._claimed.clear()  # as a second process would see it
    second = run_dir(parent, "2026-11-22_10-00-00", "model.hidden-37")
    assert Path(first).name == "2026-11-22_10-00-00_model.hidden-37" and second == first + "_2"
    assert Path(run_dir(parent, "2026-11-22_10-00-01", "")).name == "2026-11-22_10-00-01"  # no overrides
    long = run_dir(parent, "2026-11-22_10-00-02", ",".join(f"model.k{i}={i}" for i in range(60)))
    assert len(Path(long).name) <= 200 and Path(long).is_dir()


def test_only_the_glue_and_the_api_import_hydra():
    """Hydra's side is hydra_app.py (and the API's compose, the search's override parser): the models, engines,
    loop and results are plain Python a notebook can use without Hydra."""
    allowed = {"hydra_app.py", "api.py", "search.py"}
    for path in modules():
        uses = {m for m in imported(path) if m == "hydra" or m.startswith("hydra.")}
        assert not uses or path.name in allowed, f"{path.relative_to(PACKAGE)} imports {sorted(uses)}"


def test_no_function_is_longer_than_sixty_lines():
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                assert n <= 60, f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} has {n} lines"


def test_the_loop_takes_a_few_typed_arguments():
    from makemore.train import fit

    assert len(inspect.signature(fit).parameters) <= 6


def test_which_engine_trains_a_model_is_decided_in_one_place():
    """engine.resolve decides and the checkpoint's `engine` field records it: nothing outside engine/fast/ asks
    whether a model is the MLP, and no "form" of a model is passed around."""
    fast = PACKAGE / "engine" / "fast"
    for path in modules():
        if fast in path.parents:
            continue
        text = path.read_text()
        assert "isinstance(model, MLP)" not in text and "form=" not in text, path.relative_to(PACKAGE)
