"""The bench scripts the docs' tables come from run end to end (tiny sizes) and print their ratios: a change to
the engines or the evaluation that breaks one shows here, not when the docs are next measured."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


def bench(script: str, *args: str) -> str:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True,
                         timeout=600, cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_scale_times_the_load_and_both_evaluations(names_txt):
    out = bench("scale.py", "--data", str(names_txt), "--words", "3000", "--threads", "1")
    assert "load (read, vocabulary, split, contexts)" in out
    losses = [line.split("(loss ")[1] for line in out.splitlines() if line.startswith("final evaluation")]
    assert len(losses) == 2 and abs(float(losses[0].rstrip(")")) - float(losses[1].rstrip(")"))) < 1e-5


def test_engines_prints_the_step_against_its_products(names_txt):
    out = bench("engines.py", "--data", str(names_txt), "--presets", "wavenet", "--threads", "1", "--steps", "3",
                "--rounds", "2", "--budget", "0")  # fmt: skip
    assert "the fast step takes" in out and "median of the rounds' ratios" in out
    assert [line.split()[0] for line in out.splitlines() if line.startswith(("fast ", "autograd "))] == [
        "fast",
        "autograd",
    ]
