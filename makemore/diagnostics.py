"""makemore part 3's diagnostics of training, for every family on either engine, and the rules of thumb they check.

`probe(model, X, Y, before)` runs the model's forward in training mode on the probe batch (`probe_batch`: a random
subset of the training examples, drawn once) with autograd, on the model's own parameters (the fast engine's too: they
are views of its flat buffer), and reports:
  - per hidden layer (what its family taps, models/taps.py): the mean and std of the pre-activation (the
    nonlinearity's input) and of the activation, the std of the loss's gradient at the activation, and for a tanh
    layer the share of saturated units (|h| > SATURATED) and of dead ones (saturated on every example of the probe
    batch); histograms of replica 0's activations and their gradients (all units, a share of the rows);
  - per parameter: the grad/data ratio ||grad|| / ||p||, and given `before` (the parameters before the last step) the
    update/data ratio of that step, log10(||p - before|| / ||p||). For a weight matrix (mean ~0, so its rms is its
    std) these are the lecture's std ratios; unlike those they stay defined for a norm's gain, whose std starts at 0.
Each replica is measured on its own and the figures averaged over replicas.

Nothing of it reaches training: gradients come from torch.autograd.grad (no .grad, no optimizer state), batch norm's
running statistics are put back after the forward, and so is torch's generator (dropout draws from it).

`Health` turns the reports into one-line warnings where a rule of thumb is broken, each once a run.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import torch

from .models import taps
from .models.base import replica_losses

PROBE_EXAMPLES = 1024  # examples (a sequence family: rows) of the probe batch: a share over them to +-1.6 % (1 sd)
PROBE_SEED = 0  # its own generator: drawing it moves no other
SATURATED = 0.97  # |tanh| above it passes back less than 6 % of the gradient (1 - 0.97^2); the lecture's threshold
HISTOGRAM_VALUES = 16384  # values per histogram at most (all units, rows spread over the probe): binning a large
# layer's million values would cost more than the rest of a diagnosis (bench/diagnostics.py times it)


@dataclass
class Report:
    """One diagnosis (probe's): `warnings` are filled in by Health.check."""

    step: int
    lr: float | None  # the lr of the step that led here (None at step 0)
    loss: float  # the probe batch's loss in training mode (mean over replicas)
    vocab_size: int
    layers: dict[str, dict[str, float]]  # layer -> pre_mean, pre_std, act_mean, act_std, grad_std (, saturated, dead)
    histograms: dict[str, torch.Tensor]  # "<layer>/act", "<layer>/grad" -> replica 0's values
    grad_ratio: dict[str, float]  # parameter -> ||grad|| / ||p||
    update_ratio: dict[str, float]  # parameter -> log10(||p - before|| / ||p||); empty without `before`
    matrices: list[str]  # the parameters that are matrices (weights, embeddings): the update-ratio rule is theirs
    warnings: list[str] = field(default_factory=list)


def probe_batch(X: torch.Tensor, Y: torch.Tensor, n: int = PROBE_EXAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random subset of n examples of (X, Y) (all of them if fewer), the same at every diagnosis."""
    if X.shape[0] > n:
        idx = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(PROBE_SEED))[:n].sort().values
        X, Y = X[idx], Y[idx]
    return X.clone(), Y.clone()


def snapshot(model) -> dict[str, torch.Tensor]:
    """Copies of the parameters, for the update/data ratio of the step that follows."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def probe(model, X: torch.Tensor, Y: torch.Tensor, before: dict | None = None, step: int = 0, lr=None) -> Report:
    """Diagnose `model` on the examples (X, Y) shared by its replicas (the module docstring); `before`: snapshot's
    copies from before the last step."""
    params = dict(model.named_parameters())
    saved = [b.detach().clone() for b in model.buffers()]
    devices = [model.device] if model.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.enable_grad(), taps.recording() as record:
            K = model.replicas
            Xk, Yk = (t.to(model.device).unsqueeze(0).expand(K, *t.shape) for t in (X, Y))
            losses = replica_losses(model(Xk, train=True).float(), Yk)
            acts = [act for layer in record.layers.values() for _, _, act in layer.pieces]
            grads = torch.autograd.grad(losses.sum(), acts + list(params.values()), allow_unused=True)
    finally:
        with torch.no_grad():  # batch norm's running statistics as they were
            for b, s in zip(model.buffers(), saved):
                b.copy_(s)
    layers, histograms, i = {}, {}, 0
    for name, layer in record.layers.items():
        n = len(layer.pieces)
        layers[name], act, grad = _layer_stats(layer, grads[i : i + n], K)
        histograms |= {f"{name}/act": act, f"{name}/grad": grad}
        i += n
    data = model.split_replicas({k: p.detach() for k, p in params.items()})
    grad = model.split_replicas({k: g for k, g in zip(params, grads[i:]) if g is not None})
    update = {}
    if before is not None:
        update = _ratios(model.split_replicas({k: p.detach() - before[k] for k, p in params.items()}), data, True)
    return Report(
        step=step,
        lr=lr,
        loss=float(losses.detach().mean()),
        vocab_size=model.vocab_size,
        layers=layers,
        histograms=histograms,
        grad_ratio=_ratios(grad, data, False),
        update_ratio=update,
        matrices=[k for k, ts in data.items() if ts[0].dim() >= 2 and min(ts[0].shape) > 1],
    )


def _layer_stats(layer: taps.Layer, grads, K: int) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """One tapped layer's figures (averaged over replicas), and replica 0's activations and their gradients."""
    per: dict[int, list[list[torch.Tensor]]] = {}  # replica -> [pre-activations, activations, gradients] (rows, units)
    for (k, pre, act), g in zip(layer.pieces, grads):
        g = torch.zeros_like(act) if g is None else g
        for r in range(K) if k is None else (k,):  # the MLP's tensors carry the replicas first
            parts = per.setdefault(r, [[], [], []])
            for j, t in enumerate((pre, act, g)):
                if t is not None:
                    t = t[r] if k is None else t
                    parts[j].append(t.detach().float().reshape(-1, t.shape[-1]))
    names, rows = [], []
    for pres, acts, gs in per.values():
        a, g = torch.cat(acts), torch.cat(gs)
        names, values = ["act_mean", "act_std", "grad_std"], [a.mean(), a.std(), g.std()]
        if pres:
            p = torch.cat(pres)
            names, values = ["pre_mean", "pre_std", *names], [p.mean(), p.std(), *values]
        if layer.tanh:
            saturated = (a.abs() > SATURATED).float()
            names, values = names + ["saturated", "dead"], values + [saturated.mean(), saturated.amin(0).mean()]
        rows.append(torch.stack(values))
    stats = dict(zip(names, torch.stack(rows).mean(0).tolist()))
    first = per[min(per)]
    a, g = torch.cat(first[1]), torch.cat(first[2])
    n = max(1, HISTOGRAM_VALUES // a.shape[1])  # rows (examples, positions) in the histograms, spread out
    every = max(1, a.shape[0] // n)
    return stats, a[::every][:n].flatten(), g[::every][:n].flatten()


def _ratios(num: dict[str, list[torch.Tensor]], den: dict[str, list[torch.Tensor]], log: bool) -> dict[str, float]:
    """||num|| / ||den|| of each name, averaged over its replicas (with `log`, log10 of it, averaged); names whose
    ratio is 0 or undefined in every replica (a parameter held fixed, or all zeros) are left out."""
    names = [k for k in num if k in den]
    if not names:
        return {}
    norms = torch.stack([torch.linalg.vector_norm(t.float()) for k in names for t in num[k] + den[k]]).tolist()
    out, i = {}, 0
    for k in names:
        K = len(num[k])
        pairs = [(a, b) for a, b in zip(norms[i : i + K], norms[i + K : i + 2 * K]) if a > 0 and b > 0]
        i += 2 * K
        values = [math.log10(a / b) if log else a / b for a, b in pairs if math.isfinite(a / b)]
        if values:
            out[k] = sum(values) / len(values)
    return out


# The rules of thumb (makemore part 3), each warned about once a run:
INITIAL_LOSS_FACTOR = 1.5  # an initial loss above this x ln(vocabulary): a uniform guess scores ln V exactly
# a tanh layer with more than this share of its units saturated at a diagnosis: above where the trained presets'
# layers settle (docs/diagnostics.md), below the lecture's init at step 0
SATURATED_LIMIT = 0.6
DEAD_LIMIT = 0.05  # ... or more than this share dead (saturated on every probe example: they no longer learn)
UPDATE_TARGET = -3.0  # log10 of the update/data ratio the lecture steers to
UPDATE_BAND = 1.0  # warned more than 10x (1 in log10) away from it ...
STRETCH = 3  # ... at this many diagnoses in a row (one can be a noisy step)
DECAYED = 0.5  # a ratio below the band counts only while the lr is at least this share of its highest so far: a
# schedule that decays the lr lowers the ratio on purpose


class Health:
    """Reports -> one-line warnings, each once; its state (what was warned, the stretches) is plain data for a
    checkpoint, so a resumed run warns as an uninterrupted one."""

    def __init__(self, model, state: dict | None = None):
        self.ln_vocab = math.log(model.vocab_size)
        self.init, self.norm = getattr(model, "init", None), getattr(model, "norm", None)
        state = state or {}
        self.warned: list[str] = list(state.get("warned", []))
        self.stretch: dict[str, int] = dict(state.get("stretch", {}))  # "high" | "low" -> diagnoses in a row
        self.peak_lr: float = state.get("peak_lr", 0.0)

    def state(self) -> dict:
        return {"warned": list(self.warned), "stretch": dict(self.stretch), "peak_lr": self.peak_lr}

    def check(self, report: Report) -> list[str]:
        """The warnings `report` gives that were not given before (also put in report.warnings)."""
        found = self._initial_loss(report) + self._layers(report) + self._updates(report)
        report.warnings = [text for key, text in found if key not in self.warned]
        self.warned += [key for key, _ in found if key not in self.warned]
        return report.warnings

    def _fix(self) -> str:
        """The config change that keeps a stack of tanh layers out of saturation, where one applies."""
        if self.init == "lecture":
            return " (model.init=scaled)"
        return " (model.norm=batch)" if self.norm == "none" else ""

    def _initial_loss(self, r: Report) -> list[tuple[str, str]]:
        if r.step != 0 or not r.loss > INITIAL_LOSS_FACTOR * self.ln_vocab:
            return []
        fix = " (model.init=scaled)" if self.init == "lecture" else ""
        guess = f"a uniform guess gives {self.ln_vocab:.2f}"
        return [("initial_loss", f"initial loss {r.loss:.1f}, {guess}: the output layer starts too large{fix}")]

    def _layers(self, r: Report) -> list[tuple[str, str]]:
        out = []
        for name, s in r.layers.items():
            if s.get("saturated", 0.0) > SATURATED_LIMIT:
                what = f"{s['saturated']:.0%} of its tanh units saturated (|h| > {SATURATED}) at step {r.step}"
                why = f"passing back almost no gradient: its pre-activations are too large{self._fix()}"
                out.append((f"saturated:{name}", f"{name}: {what}, {why}"))
            if s.get("dead", 0.0) > DEAD_LIMIT:
                what = f"{s['dead']:.0%} of its tanh units dead (saturated on every probe example)"
                out.append((f"dead:{name}", f"{name}: {what} at step {r.step}: they no longer learn{self._fix()}"))
        return out

    def _updates(self, r: Report) -> list[tuple[str, str]]:
        """The lr is one knob for every parameter, so the rule reads the weight matrices' median ratio: a single
        outlier has its own reason (the scaled init starts Wout 100x small, so its ratio starts high)."""
        ratios = [r.update_ratio[k] for k in r.matrices if k in r.update_ratio]
        if r.lr is None or not ratios:
            return []
        self.peak_lr = max(self.peak_lr, r.lr)
        median = statistics.median(ratios)
        side = None
        if median > UPDATE_TARGET + UPDATE_BAND:
            side = "high"
        elif median < UPDATE_TARGET - UPDATE_BAND and r.lr >= DECAYED * self.peak_lr:
            side = "low"
        for s in ("high", "low"):
            self.stretch[s] = self.stretch.get(s, 0) + 1 if s == side else 0
        if side is None or self.stretch[side] < STRETCH:
            return []
        far, size = ("over 10x", "large") if side == "high" else ("under a tenth of", "small")
        where = f"the weight matrices' median, at {STRETCH} diagnoses in a row to step {r.step}"
        return [(f"update:{side}", f"update/data ratio 10^{median:.1f} ({where}), {far} the rule of thumb 1e-3: "
                                   f"the lr {r.lr:g} is too {size}")]  # fmt: skip
