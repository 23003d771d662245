"""The lecture's investigation tools: lr finder, overfit check, embedding map, sampling, bigram."""

from __future__ import annotations

import json
import math

import pytest
from conftest import QUICK, metrics, run_cli, run_dirs, run_module
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from makemore.lr_find import smooth, suggest
from makemore.sample import classify


@pytest.mark.slow
def test_lr_find_writes_curve_plot_and_suggestion(tmp_path, words_file):
    # up to lr 10^1.5: far enough past the best lr that the loss turns and rises inside the range
    r = run_module(
        "makemore.lr_find",
        f"data.path={words_file}",
        "model.hidden=32",
        "lr_find.steps=200",
        "lr_find.end=1.5",
        "train.steps=5",  # not read by lr_find: not in its dir name
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    (run,) = run_dirs(tmp_path)
    assert run.name.endswith("_lr_find+lr_find.end-1.5+lr_find.steps-200+model.hidden-32"), run.name
    result = json.loads((run / "lr_find.json").read_text())
    assert len(result["exponents"]) == len(result["losses"]) <= 200  # cut where the loss stops being finite
    assert result["exponents"][0] == pytest.approx(-3) and result["exponents"][-1] <= 1.5
    # the suggestion follows from the recorded curve by the documented rule (half the lr where the smoothed loss
    # is lowest), and the curve has a real minimum inside the range: the loss fell before it rose
    exps, smoothed = result["exponents"], result["smoothed"]
    lowest = min(range(len(smoothed)), key=smoothed.__getitem__)
    assert result["suggested_lr"] == pytest.approx(10 ** exps[lowest] / 2, rel=1e-6)
    assert 0 < lowest < len(smoothed) - 1 and smoothed[lowest] < smoothed[0] - 0.3
    assert f"suggested lr: {result['suggested_lr']:.3g}" in r.stdout + r.stderr
    assert (run / "lr_find.png").stat().st_size > 5000
    acc = EventAccumulator(str(run))
    acc.Reload()
    assert "lr_find/loss" in acc.Tags()["scalars"] and "lr_find" in acc.Tags()["images"]


def test_suggestion_rule_is_half_the_smoothed_minimum():
    exps = [e / 10 for e in range(-30, 1)]
    losses = [(e + 1) ** 2 + 2 for e in exps]  # lowest at e = -1
    sm = smooth(losses, beta=0.0)
    assert sm == pytest.approx(losses)
    assert suggest(exps, sm) == pytest.approx(10**-1 / 2)
    assert suggest(exps, [math.inf] * len(exps)) is None


@pytest.mark.slow
def test_overfit_batch_fits_the_first_five_words(tmp_path):
    r = run_cli(
        "experiment=overfit_batch", cwd=tmp_path
    )  # the embedded names start emma, olivia, ava, isabella, sophia
    assert r.returncode == 0, r.stderr
    m = metrics(run_dirs(tmp_path)[0])
    assert m["params"] == 3481 and m["examples"]["train"] == 32
    assert m["train_loss"] < 0.5
    fit = m["fit"]
    assert fit["ambiguous_contexts"] == ["... -> a, e, i, o, s"] and fit["loss_floor"] < m["train_loss"]
    assert "ambiguous context" in r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("emb, title", [(2, "2-D embedding"), (5, "PCA projection")])
def test_embedding_map_for_every_run(tmp_path, words_file, emb, title):
    r = run_cli(*QUICK, f"model.emb={emb}", f"data.path={words_file}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (run,) = run_dirs(tmp_path)
    assert (run / "embedding.png").stat().st_size > 5000 and (run / "loss.png").stat().st_size > 5000
    acc = EventAccumulator(str(run))
    acc.Reload()
    assert "visuals/embedding" in acc.Tags()["images"]
    projector = (run / "projector_config.pbtxt").read_text()
    assert "metadata.tsv" in projector
    meta = next(run.rglob("metadata.tsv")).read_text().split()
    assert meta[0] == "." and "a" in meta


def test_project_2d_titles():
    import torch

    from makemore.results.plots import project_2d

    assert project_2d(torch.randn(27, 2))[1] == "2-D embedding"
    xy, title = project_2d(torch.randn(27, 5))
    assert xy.shape == (27, 2) and title.startswith("PCA projection of the 5-D embedding")


@pytest.mark.slow
def test_sample_from_a_checkpoint(tmp_path):
    assert run_cli("experiment=overfit_batch", cwd=tmp_path).returncode == 0
    (run,) = run_dirs(tmp_path)
    r = run_module("makemore.sample", str(run), "-n", "7", "--seed", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 8 and lines[-1].endswith("/7 new")
    assert any(line.split() == ["emma", "train"] or line.split()[-1] == "train" for line in lines[:-1])
    again = run_module("makemore.sample", str(run), "-n", "7", "--seed", "3", cwd=tmp_path)
    assert again.stdout == r.stdout  # seeded
    pre = run_module("makemore.sample", str(run), "-n", "3", "--prefix", "is", "--temperature", "0.5", cwd=tmp_path)
    assert pre.returncode == 0 and all(line.startswith("is") for line in pre.stdout.splitlines()[:-1])


def test_sample_on_a_sweep_dir_names_its_jobs(tmp_path, capsys):
    from makemore.sample import main

    for job in ("a", "b"):
        (tmp_path / job).mkdir()
        (tmp_path / job / "checkpoint.pt").write_bytes(b"")
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a sweep: sample from one of its jobs' run dirs" in err
    assert str(tmp_path / "a") in err and str(tmp_path / "b") in err


def test_classify():
    splits = {"train": ["emma", "ava"], "dev": ["mia"], "test": ["zoe"]}
    assert classify(["emma", "mia", "zoe", "xqz"], splits) == ["train", "dev", "test", "new"]


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_sample_errors(tmp_path, damage):
    run = tmp_path / "run"
    run.mkdir()
    if damage == "garbage":
        (run / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    r = run_module("makemore.sample", str(run), cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert ("damaged checkpoint" if damage == "garbage" else "no checkpoint") in r.stderr


@pytest.mark.slow
def test_bigram_baseline_end_to_end(tmp_path, words_file):
    r = run_cli("model=bigram", f"data.path={words_file}", "samples=3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (run,) = run_dirs(tmp_path)
    m = metrics(run)
    assert m["steps"] == 0 and m["params"] == 27 * 27 and 2.0 < m["dev_loss"] < 3.3
    assert len((run / "samples.txt").read_text().splitlines()) == 3
    s = run_module("makemore.sample", str(run), "-n", "4", cwd=tmp_path)
    assert s.returncode == 0 and len(s.stdout.splitlines()) == 5


@pytest.mark.slow
def test_bigram_on_names_txt_matches_the_previous_lecture(tmp_path, names_txt):
    r = run_cli("model=bigram", f"data.path={names_txt}", "samples=0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    m = metrics(run_dirs(tmp_path)[0])
    assert m["train_loss"] == pytest.approx(2.455, abs=0.002) and m["dev_loss"] == pytest.approx(2.453, abs=0.002)


def test_lr_find_names_its_dir_by_what_it_reads():
    from makemore.hydra_app import lr_find_name

    assert lr_find_name("model.hidden-32+schedule.lr-0.1+train.batch_size-64+train.steps-5") == (
        "lr_find+model.hidden-32+train.batch_size-64"
    )
    assert lr_find_name("") == "lr_find"
