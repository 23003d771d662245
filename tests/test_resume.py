"""resume.py in-process: `resume=PATH` turned into the command that continues a run or a sweep, the states of a
sweep's job dirs, a sweep's id guarding its dir against a stale job, and a study file deleted or damaged."""

from __future__ import annotations

import json

import optuna
import pytest
import yaml

from makemore import resume, search
from makemore.config import ConfigError
from makemore.results import record


def _run_dir(tmp_path, name="2026-12-01_10-00-00_model.emb-4+train.steps-200", overrides=("model.emb=4",)):
    run = tmp_path / "outputs" / "runs" / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    return run


def test_resume_path_replays_the_runs_overrides_and_lets_the_command_line_win(tmp_path):
    run = _run_dir(tmp_path, overrides=("model.emb=4", "train.steps=200", "resume=false"))
    argv = resume.command_line([f"resume={run}", "train.steps=400"])
    assert argv == ["model.emb=4", "train.steps=400", f"hydra.run.dir={run}", "resume=true"]
    assert resume.command_line(["resume=true", "hydra.run.dir=x"]) == ["resume=true", "hydra.run.dir=x"]


def test_resume_path_of_an_old_dir_name_with_equals_and_commas_is_quoted_for_hydra(tmp_path):
    run = _run_dir(tmp_path, name="2026-11-22_10-00-00_model.emb=4,train.steps=200")
    argv = resume.command_line([f"resume={run}"])
    assert argv[-2] == f"hydra.run.dir='{run}'" and argv[-1] == "resume=true"
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert OverridesParser.create().parse_override(argv[-2]).value() == str(run)


def test_resume_path_of_a_sweep_continues_it_as_a_multirun(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    overrides = {"hydra": ["hydra.launcher.n_jobs=1"], "task": ["model.emb=2,4", "data.path=w.txt"]}
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": overrides}}))
    argv = resume.command_line([f"resume={sweep}"])
    assert argv == ["-m", "hydra.launcher.n_jobs=1", "model.emb=2,4", "data.path=w.txt", f"hydra.sweep.dir={sweep}"]
    (sweep / "model.emb-2" / ".hydra").mkdir(parents=True)
    (sweep / "model.emb-2" / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"mode": "MULTIRUN"}}))
    with pytest.raises(ConfigError, match=f"is a job of the sweep {sweep}: continue the sweep, resume={sweep}"):
        resume.command_line([f"resume={sweep / 'model.emb-2'}"])


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["resume=nowhere"], "resume=nowhere: no such dir"),
        (["resume={d}", "hydra.run.dir=x"], "leave out hydra.run.dir"),
        (["resume={d}"], "is not a run dir"),
    ],
)
def test_resume_path_refused_in_one_line(tmp_path, argv, needle):
    with pytest.raises(ConfigError, match=needle):
        resume.command_line([a.format(d=tmp_path) for a in argv])


def test_a_sweep_jobs_state_from_what_its_dir_holds(tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    assert resume.job_state(None, job, "a") == "new"
    (job / resume.CHECKPOINT).write_bytes(b"")
    assert resume.job_state(None, job, "a") == "interrupted"
    assert resume.job_state({"status": "ok", "sweep_id": "a"}, job, "a") == "finished"
    assert resume.job_state({"status": "pruned", "sweep_id": "a"}, job, "a") == "finished"
    assert resume.job_state({"status": "failed", "sweep_id": "a"}, job, "a") == "new"  # a failed job reruns
    assert resume.job_state({"status": "ok", "sweep_id": "b"}, job, "a") == "new"  # another sweep's record


def test_a_stale_job_never_writes_into_a_new_sweep_of_the_same_dir(tmp_path):
    own = resume.sweep_id(tmp_path, create=True)
    assert resume.sweep_id(tmp_path, create=True) == own  # kept when the sweep is continued
    resume.check_owner(tmp_path, own)
    (tmp_path / resume.SWEEP_FILE).write_text(json.dumps({"sweep_id": "new"}))  # deleted and started again
    with pytest.raises(resume.StaleJob, match="now holds another sweep"):
        resume.check_owner(tmp_path, own)


def _journal_with_a_trial_dir(tmp_path):
    storage = search.storage_path(None, tmp_path)
    optuna.create_study(study_name="s", storage=search.open_storage(storage))
    (tmp_path / "0_model.emb-2" / ".hydra").mkdir(parents=True)
    return storage


def test_a_deleted_study_file_is_one_line_naming_it(tmp_path):
    storage = _journal_with_a_trial_dir(tmp_path)
    (tmp_path / search.JOURNAL).unlink()
    with pytest.raises(search.SearchError, match=f"the study storage {storage} is missing"):
        search.open_storage(storage, expected=search.has_trial_dirs(tmp_path))
    assert not (tmp_path / search.JOURNAL).exists()  # not silently made again


def test_a_damaged_study_file_is_one_line_naming_it(tmp_path):
    storage = _journal_with_a_trial_dir(tmp_path)
    journal = tmp_path / search.JOURNAL
    journal.write_text("{not json\n" + journal.read_text())  # a broken line before the study's
    with pytest.raises(search.SearchError, match=f"the study storage {storage} is damaged"):
        optuna.load_study(study_name="s", storage=search.open_storage(storage, expected=True))


def test_a_failed_record_carries_no_sweep_id_outside_a_sweep(tmp_path):
    record.write(tmp_path, record.failed("x"))
    assert "sweep_id" not in json.loads((tmp_path / "metrics.json").read_text())
