"""The sweep report (results/sweep.py, `python -m makemore.report`): its CSV cells and the dirs it refuses."""

from __future__ import annotations

import csv
import io

import pytest

from makemore.report import main as report_main
from makemore.results.sweep import to_csv


@pytest.mark.slow
def test_report_refuses_a_dir_that_is_not_one_sweep(grid_2x2, tmp_path, capsys):
    sweep, _ = grid_2x2
    parent = tmp_path / "multirun"
    parent.mkdir()
    import shutil

    for name in ("a", "b"):
        shutil.copytree(sweep, parent / name)
    before = sorted(p.relative_to(parent) for p in parent.rglob("*"))
    assert report_main([str(parent)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not one sweep" in err[0] and "pass one of them" in err[0]
    assert sorted(p.relative_to(parent) for p in parent.rglob("*")) == before  # nothing written
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report_main([str(empty)]) == 2 and "holds no sweep jobs" in capsys.readouterr().err
    assert report_main([str(parent / "a")]) == 0  # one sweep is fine


def test_report_csv_keeps_zero_losses_and_blanks_none():
    """A loss of exactly 0.0 is a value, not a missing one: it stays "0.0"; None becomes an empty cell."""
    rows = [
        {
            "job": "a",
            "knobs": {"model.hidden": 8},
            "params": 10,
            "train_loss": 0.0,
            "dev_loss": 0.0,
            "train_loss_std": None,
            "dev_loss_std": None,
            "wall_seconds": 1.0,
            "status": "ok",
            "error": None,
        },
        {
            "job": "b",
            "knobs": {},
            "params": None,
            "train_loss": None,
            "dev_loss": None,
            "train_loss_std": None,
            "dev_loss_std": None,
            "wall_seconds": None,
            "status": "failed",
            "error": "boom",
        },
    ]
    a, b = csv.DictReader(io.StringIO(to_csv(rows, ["model.hidden"])))
    assert a == {
        "job": "a",
        "num": "",
        "model.hidden": "8",
        "params": "10",
        "train_loss": "0.0",
        "train_loss_std": "",
        "dev_loss": "0.0",
        "dev_loss_std": "",
        "wall_seconds": "1.0",
        "status": "ok",
        "error": "",
    }
    assert b == {
        "job": "b",
        "num": "",
        "model.hidden": "",
        "params": "",
        "train_loss": "",
        "train_loss_std": "",
        "dev_loss": "",
        "dev_loss_std": "",
        "wall_seconds": "",
        "status": "failed",
        "error": "boom",
    }
