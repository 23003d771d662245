"""train.precision=bf16: bfloat16 products with fp32 master weights, on both engines (the fast engine against the
fp32 autograd engine is in test_engines.py). The autograd engine tracks its fp32 self, the weights and evaluations
stay fp32, and a device without bfloat16 products is refused in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import QUICK, ROOT, metrics, run_cli
from test_engines import OPTIMIZERS, drive, twins

from makemore import engine as engines
from makemore.config import ConfigError
from makemore.device import check_precision
from makemore.engine.fast import fused
from makemore.engine.fast.layout import FlatLayout
from makemore.engine.fast.step import FastStep
from makemore.models import MLP
from makemore.schedule import step_schedule
from makemore.train import Loop, evaluate, fit

if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
    pytest.skip("this CPU has no bfloat16 products (oneDNN)", allow_module_level=True)


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_bf16_autograd_engine_tracks_its_fp32_self(norm):
    net32, net16 = twins(norm, 2, hidden=48, emb=8)
    ix = torch.randint(0, 200, (200, 2, 32), generator=torch.Generator().manual_seed(2))
    lr = step_schedule([0.2, 0.05], [100])
    ref = drive(engines.make("autograd", net32, 32, OPTIMIZERS["sgd"]), ix, lr)
    low = drive(engines.make("autograd", net16, 32, OPTIMIZERS["sgd"], "bf16"), ix, lr)
    torch.testing.assert_close(low[0], ref[0], rtol=1e-2, atol=0)
    assert not torch.equal(low, ref)
    assert (low[-50:].mean(0) - ref[-50:].mean(0)).abs().max() < 0.03
    assert all(p.dtype == torch.float32 for p in net16.parameters())
    assert all(p.grad.dtype == torch.float32 for p in net16.parameters() if p.grad is not None)


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_a_bf16_fit_ends_near_fp32_and_evaluates_in_fp32(norm, tiny_data):
    def run(precision):
        model = MLP(len(tiny_data.vocab), block_size=3, emb=8, hidden=128, norm=norm, init="scaled")
        engine = engines.make("fast", model, 64, OPTIMIZERS["sgd_wd"], precision)
        loop = Loop(steps=600, batch_size=64, schedule=step_schedule([0.2, 0.05], [400]), seed=3, eval_every=300,
                    checkpoint_every=600)  # fmt: skip
        return model, fit(model, engine, tiny_data, loop)

    m32, p32 = run("fp32")
    m16, p16 = run("bf16")
    assert all(p.dtype == torch.float32 for p in m16.parameters())
    dev16, dev32 = p16.evals[-1]["dev"][0], p32.evals[-1]["dev"][0]
    assert abs(dev16 - dev32) < 0.02 and dev32 < 2.8  # from ln 27 = 3.3
    # the recorded evaluation is the fp32 forward of the fp32 weights (batch norm calibrated as every evaluation is)
    assert p16.evals[-1]["dev"][0] == pytest.approx(float(evaluate(m16, tiny_data)["dev"][0]))


def test_precision_values():
    layout = FlatLayout(MLP(27, norm="layer"))
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        FastStep(layout, 8, precision="fp16")
    step = FastStep(layout, 8, precision="bf16")
    layer = step.layers[0]
    assert step.Wp["W1a"].dtype == torch.bfloat16 and step.h_a.dtype == torch.bfloat16
    assert layer.s.dtype == torch.float32  # the tanh's sigmoid, kept in fp32


def test_a_device_without_bf16_products_is_refused_in_one_line():
    check_precision("fp32", torch.device("meta"))  # fp32 runs anywhere
    check_precision("bf16", torch.device("cpu"))  # this CPU has them (the module is skipped otherwise)
    with pytest.raises(ConfigError) as e:
        check_precision("bf16", torch.device("meta"))  # a device whose bf16 product gives no number
    assert str(e.value) == "train.precision=bf16 but this meta has no bfloat16 products; allowed here: fp32"


@pytest.mark.slow
@pytest.mark.parametrize("options", [("experiment=best", "model.hidden=64"), ("model.layers=2", "model.init=scaled")])
def test_bf16_from_the_command_line(tmp_path, words_file, options):
    r = run_cli(*QUICK, f"data.path={words_file}", "hydra.run.dir=r", "train.precision=bf16", *options, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "precision bf16" in r.stdout + r.stderr
    m = metrics(tmp_path / "r")
    assert m["status"] == "ok" and m["dev_loss"] < 3.5
    assert "precision: bf16" in (tmp_path / "r" / ".hydra" / "config.yaml").read_text()


@pytest.mark.slow
def test_the_precision_bench_prints_both_tables_and_the_trained_ratio(words_file):
    """bench/precision.py as the README runs it, on a small word file and few steps: its tables and the trained
    comparison come out (the timings themselves are the bench's business, not a test's)."""
    bench = [sys.executable, str(ROOT / "bench" / "precision.py"), "--data", str(words_file)]
    r = subprocess.run(
        [*bench, "--steps", "2000", "--step-count", "3", "--repeats", "1"], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert sum(line.startswith("bf16 step: ") for line in out.splitlines()) == 2  # the preset's table, the lecture's
    assert out.count("medians over the 1 rounds of the ratios within a round:") == 2
    if fused.library() is not None:  # the preset's layer norm is fused: the step with torch's kernels beside it
        assert out.count("fused step over the step with torch's kernels: fp32 ") == 1
        assert "bf16 step with torch's kernels: " in out
    for table in ("experiment=best: block 6, emb 32, hidden 1000", "experiment=lecture: block 3, emb 10"):
        assert table in out
    trained = out.split("trained 2000 steps in each precision")[1]
    rows = {w[0]: w[1:] for w in map(str.split, trained.splitlines()) if w and w[0] in ("fp32", "bf16") and len(w) == 5}
    assert set(rows) == {"fp32", "bf16"} and all(float(v[0]) > 0 for v in rows.values())  # training seconds
    assert abs(float(rows["bf16"][3]) - float(rows["fp32"][3])) < 0.02  # the dev losses agree
    assert "bf16 trains " in trained and "per 1000-step stretch, bf16's speed over fp32's: median " in trained
