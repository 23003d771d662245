"""Diagnostics (makemore/diagnostics.py, train.diagnose_every): what a probe reports of every family, that a run with
diagnoses ends bit-identical to one without on both engines, the health rules' warnings, the TensorBoard events read
back with TensorBoard's own reader, and the lecture's picture on names.txt (the lecture's init saturates, the scaled
init does not)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import FAMILIES, metrics, run_cli, run_dirs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from makemore import api, diagnostics
from makemore.results.tensorboard import TensorBoard
from makemore.train import Hooks

SMALL = ("model.hidden=16", "model.emb=4")
# each family's tapped layers, and whether they are tanh layers (saturated and dead units counted)
LAYERS = {
    "mlp": (["layer1"], True),
    "deep": (["layer1", "layer2", "layer3"], True),
    "wavenet": (["layer1", "layer2"], True),
    "rnn": (["hidden"], True),
    "gru": (["candidate"], True),
    "bow": (["mlp"], True),
    "transformer": (["block1", "block2"], False),
}
OVERRIDES = FAMILIES | {
    "mlp": SMALL,
    "deep": (*SMALL, "model.layers=3", "model.norm=batch", "model.init=scaled"),
}


class Collect(Hooks):
    """The reports a run's diagnoses hand the hooks."""

    def __init__(self):
        self.reports: list[diagnostics.Report] = []

    def on_diagnose(self, step, report):
        self.reports.append(report)


def run(words_file, overrides, steps=40, every=10, hooks=None):
    cfg = api.compose([f"data.path={words_file}", f"train.steps={steps}", f"train.eval_every={steps}",
                       f"train.diagnose_every={every}", "train.batch_size=16", *overrides])  # fmt: skip
    s = api.setup(cfg)
    torch.set_num_threads(1)
    return s, api.train(s, hooks)


@pytest.mark.parametrize(
    "family", [f if f in ("mlp", "wavenet") else pytest.param(f, marks=pytest.mark.slow) for f in LAYERS]
)
def test_every_family_reports_its_layers_and_parameters(words_file, family):
    """At step 0, every diagnose_every steps and the last step: each tapped layer's figures in range, a grad ratio
    for every parameter, an update ratio for every parameter after the first step."""
    hooks = Collect()
    s, _ = run(words_file, OVERRIDES[family], steps=25, every=10, hooks=hooks)
    assert [r.step for r in hooks.reports] == [0, 10, 20, 25]
    names, tanh = LAYERS[family]
    params = {n for n in s.model.split_replicas(dict(s.model.named_parameters()))}
    for r in hooks.reports:
        assert list(r.layers) == names
        for layer, figures in r.layers.items():
            assert all(math.isfinite(v) for v in figures.values()), (layer, figures)
            assert figures["act_std"] > 0 and figures["grad_std"] > 0
            assert ("saturated" in figures) == tanh and ("pre_std" in figures)
            if tanh:
                assert 0 <= figures["dead"] <= figures["saturated"] <= 1
                assert abs(figures["act_mean"]) < 1
            assert r.histograms[f"{layer}/act"].numel() > 0 and r.histograms[f"{layer}/grad"].numel() > 0
        # a ratio is left out where it is 0 or undefined (a norm's shift starts at 0; a bias before batch norm)
        assert set(r.matrices) <= set(r.grad_ratio) <= params and r.matrices
        assert r.loss > 0 and math.isfinite(r.loss)
        if r.step:
            assert set(r.matrices) <= set(r.update_ratio) <= params
            assert all(-12 < v < 2 for v in r.update_ratio.values()), r.update_ratio
        else:
            assert r.update_ratio == {}


@pytest.mark.parametrize(
    "family, engine, extra",
    [
        ("mlp", "fast", ()),
        pytest.param("mlp", "fast", ("train.replicas=2", "optimizer.momentum=0.9"), marks=pytest.mark.slow),
        pytest.param("deep", "fast", ("optimizer=adamw",), marks=pytest.mark.slow),
        ("wavenet", "fast", ()),
        pytest.param("mlp", "autograd", (), marks=pytest.mark.slow),
        pytest.param("deep", "autograd", ("train.replicas=2",), marks=pytest.mark.slow),
        pytest.param("rnn", "autograd", (), marks=pytest.mark.slow),
        pytest.param("gru", "autograd", (), marks=pytest.mark.slow),
        pytest.param("bow", "autograd", (), marks=pytest.mark.slow),
        pytest.param(
            "transformer", "autograd", ("train.replicas=2",), marks=pytest.mark.slow
        ),  # dropout: torch's generator is left as it was
    ],
)
def test_diagnoses_leave_the_trajectory_bit_identical(words_file, family, engine, extra):
    """The same run with train.diagnose_every=7 and =0: the same minibatch losses, evaluations and final parameters
    and buffers (batch norm's running statistics), bit for bit."""
    overrides = (*OVERRIDES[family], f"train.engine={engine}", *extra)
    runs = [run(words_file, overrides, steps=30, every=every) for every in (7, 0)]
    (a, pa), (b, pb) = runs
    assert a.engine_name == b.engine_name == engine
    assert torch.equal(pa.minibatch_losses(), pb.minibatch_losses())
    assert pa.evals == pb.evals
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), name


def test_a_resumed_run_diagnoses_and_warns_as_an_uninterrupted_one(tmp_path, words_file):
    """A checkpoint at step 20 (saved and loaded as plain data, weights_only) holds the warnings and the health
    rules' state: the resumed run diagnoses the same later steps, repeats no warning, and ends bit-identical."""
    from makemore import checkpoint

    overrides = (*SMALL, "model.init=lecture", "train.checkpoint_every=20")
    path = tmp_path / checkpoint.FILENAME

    class Save(Collect):
        def on_checkpoint(self, progress):
            if progress.step == 20:
                checkpoint.save(path, checkpoint.run_state(whole.model, whole.data, whole.conf, progress))

    whole_hooks = Save()
    cfg = api.compose([f"data.path={words_file}", "train.steps=40", "train.eval_every=10", "train.batch_size=16",
                       *overrides])  # fmt: skip
    whole = api.setup(cfg)
    torch.set_num_threads(1)
    done = api.train(whole, whole_hooks)
    assert any(t.startswith("initial loss") for t in done.warnings)
    resumed, hooks = api.setup(cfg), Collect()
    torch.set_num_threads(1)
    progress = checkpoint.resume(path, resumed.model, resumed.conf, resumed.data.vocab.itos)
    again = api.train(resumed, hooks, progress)
    assert [r.step for r in hooks.reports] == [30, 40] == [r.step for r in whole_hooks.reports][-2:]
    assert again.warnings == done.warnings
    assert [r.warnings for r in hooks.reports] == [r.warnings for r in whole_hooks.reports][-2:]
    assert torch.equal(again.minibatch_losses(), done.minibatch_losses())
    for (name, x), (_, y) in zip(resumed.model.state_dict().items(), whole.model.state_dict().items()):
        assert torch.equal(x, y), name


def test_bigram_has_nothing_to_diagnose(words_file):
    """The count model trains by counting: no steps, no diagnoses, no warnings."""
    hooks = Collect()
    _, progress = run(words_file, ("model=bigram",), hooks=hooks)
    assert hooks.reports == [] and progress.warnings == []


def report(step=0, loss=3.3, layers=None, update=None, lr=0.1, V=27):
    return diagnostics.Report(
        step=step, lr=None if step == 0 else lr, loss=loss, vocab_size=V, layers=layers or {}, histograms={},
        grad_ratio={}, update_ratio=update or {}, matrices=list(update or {}),
    )  # fmt: skip


class Model:
    """What Health reads of a model."""

    def __init__(self, init="lecture", norm="none", vocab_size=27):
        self.init, self.norm, self.vocab_size = init, norm, vocab_size


def test_the_initial_loss_warning_names_the_fix():
    (text,) = diagnostics.Health(Model("lecture")).check(report(loss=27.0))
    assert text == (
        "initial loss 27.0, a uniform guess gives 3.30: the output layer starts too large (model.init=scaled)"
    )
    assert diagnostics.Health(Model("scaled")).check(report(loss=3.4)) == []
    assert diagnostics.Health(Model("lecture")).check(report(step=10, loss=27.0)) == []  # only at step 0


def test_saturated_and_dead_layers_warn_once():
    h = diagnostics.Health(Model("scaled", "none"))
    bad = {"layer1": {"saturated": 0.8, "dead": 0.2}, "layer2": {"saturated": 0.1, "dead": 0.0}}
    first = h.check(report(step=0, layers=bad))
    assert len(first) == 2 and all(t.startswith("layer1: ") and "\n" not in t for t in first)
    assert "80% of its tanh units saturated" in first[0] and "(model.norm=batch)" in first[0]
    assert "20% of its tanh units dead" in first[1]
    assert h.check(report(step=10, layers=bad)) == []  # each once a run
    resumed = diagnostics.Health(Model("scaled"), h.state())  # a checkpoint's state: still once
    assert resumed.check(report(step=20, layers=bad)) == []


def test_update_ratios_warn_after_a_stretch():
    """The weight matrices' median ratio more than 10x from 1e-3 at STRETCH diagnoses in a row: one warning; a low
    ratio while the schedule has decayed the lr does not count."""
    h = diagnostics.Health(Model("scaled"))
    high = {"W1": -1.5, "Wout": -1.2, "C": -1.8}
    found = [h.check(report(step=s, update=high)) for s in range(1, diagnostics.STRETCH + 2)]
    assert [len(f) for f in found] == [0] * (diagnostics.STRETCH - 1) + [1, 0]
    assert "update/data ratio 10^-1.5" in found[-2][0] and "the lr 0.1 is too large" in found[-2][0]
    h = diagnostics.Health(Model("scaled"))
    low = {"W1": -5.0, "Wout": -5.0}
    h.check(report(step=1, update={"W1": -3.0}, lr=0.1))
    assert all(h.check(report(step=s, update=low, lr=0.01)) == [] for s in range(2, 8))  # decayed 10x: fine
    h = diagnostics.Health(Model("scaled"))
    warned = [h.check(report(step=s, update=low, lr=0.01)) for s in range(1, 5)]
    assert any("too small" in t for w in warned for t in w)
    h = diagnostics.Health(Model("scaled"))
    mixed = [high, {"W1": -3.0}, high, high]  # a healthy diagnosis breaks the stretch
    assert [h.check(report(step=s, update=u)) for s, u in enumerate(mixed, 1)] == [[], [], [], []]


def test_the_events_read_back_with_tensorboards_reader(tmp_path, words_file):
    """train_health/ scalars per layer and parameter, histograms of activations and gradients, and the Custom Scalars
    chart of the update ratios with its -3 guide, as TensorBoard's EventAccumulator reads them."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    tb = TensorBoard(str(tmp_path), health=True)

    class ToTensorBoard(Hooks):
        def on_diagnose(self, step, r):
            tb.health(step, r)

    run(words_file, (*SMALL, "model.layers=2"), steps=20, every=10, hooks=ToTensorBoard())
    tb.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "tensors": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    for layer in ("layer1", "layer2"):
        for figure in ("pre_mean", "pre_std", "act_mean", "act_std", "grad_std", "saturated", "dead"):
            assert [e.step for e in acc.Scalars(f"train_health/{layer}/{figure}")] == [0, 10, 20]
        for kind in ("act", "grad"):
            hist = acc.Histograms(f"train_health/{layer}/{kind}")
            assert [e.step for e in hist] == [0, 10, 20] and hist[0].histogram_value.num > 0
    for name in ("C", "W1", "b1", "W2", "Wout", "bout"):
        assert len(acc.Scalars(f"train_health/grad_ratio/{name}")) == 3
        assert [e.step for e in acc.Scalars(f"train_health/update_ratio/{name}")] == [10, 20]
    assert {e.value for e in acc.Scalars("train_health/update_ratio_guide")} == {-3.0}
    assert "train_health/layer1/act" in tags["histograms"]
    (tensor,) = acc.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(tensor.tensor_proto.string_val[0])
    (health,) = [c for c in layout.category if c.title == "train_health"]
    chart = health.chart[0]
    assert "update" in chart.title and list(chart.multiline.tag) == [
        r"^train_health/update_ratio/",
        r"^train_health/update_ratio_guide$",
    ]


@pytest.mark.slow
def test_the_lecture_init_saturates_and_warns_on_names_txt(names_txt):
    """At step 0 on names.txt: the lecture's init has at least twice the scaled init's saturated share in layer 1
    and its initial loss warns (naming model.init=scaled); no preset built on the scaled init warns of it."""
    shares, warned = {}, {}
    presets = ["model.init=lecture", "model.init=scaled", "experiment=best", "experiment=best_adamw",
               "experiment=deep", "experiment=wavenet"]  # fmt: skip
    for preset in presets:
        s = api.setup(api.compose([preset, f"data.path={names_txt}"]))
        torch.set_num_threads(1)
        r = diagnostics.probe(s.model, *diagnostics.probe_batch(s.data.X["train"], s.data.Y["train"]))  # as at step 0
        diagnostics.Health(s.model).check(r)
        shares[preset] = r.layers["layer1"]["saturated"]
        warned[preset] = [t for t in r.warnings if t.startswith("initial loss")]
    assert shares["model.init=lecture"] >= 2 * shares["model.init=scaled"], shares
    (text,) = warned["model.init=lecture"]
    assert "model.init=scaled" in text and "a uniform guess gives 3.30" in text
    assert all(warned[p] == [] for p in presets[1:]), warned


@pytest.mark.slow
def test_a_run_warns_on_the_console_and_in_metrics_json(tmp_path, words_file):
    """As a user runs it: the lecture's init warns in one line on the console and lists it in metrics.json; the
    run's events hold the train_health/ group; train.diagnose_every=0 writes none."""
    args = (f"data.path={words_file}", *SMALL, "train.steps=60", "train.eval_every=20", "samples=2")
    for d in ("on", "off"):
        (tmp_path / d).mkdir()
    r = run_cli(*args, "model.init=lecture", cwd=tmp_path / "on")
    assert r.returncode == 0, r.stderr
    (run_dir,) = run_dirs(tmp_path / "on")
    warnings = metrics(run_dir)["warnings"]
    assert any(t.startswith("initial loss") for t in warnings), warnings
    out = r.stdout + r.stderr
    assert all(t in out for t in warnings)
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("train_health/layer1/saturated")] == [0, 20, 40, 60]
    r = run_cli(*args, "model.init=scaled", "train.diagnose_every=0", cwd=tmp_path / "off")
    assert r.returncode == 0, r.stderr
    (run_dir,) = run_dirs(tmp_path / "off")
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    assert not any(t.startswith("train_health/") for t in acc.Tags()["scalars"])
    assert metrics(run_dir)["warnings"] == []
