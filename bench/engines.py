"""The engines side by side on the deeper presets: µs per step of the fast engine and of the autograd engine (eager
and torch.compile'd), the share of each step its matrix products take, and the dev loss after a fixed budget.

    python bench/engines.py                              # best_adamw, deep, wavenet, transformer
    python bench/engines.py --presets best_adamw --budget 5000 --rounds 7

For each preset (experiments/<name>.yaml, as `python -m makemore.run experiment=<name>` composes it) and engine:
  1. µs/step: best of --rounds interleaved rounds of --steps steps on the same batches (a slow minute of this
     shared machine falls on every engine of that round), after a warm-up that also compiles (its seconds shown);
  2. products: the step's matrix products alone on the same shapes (the fast step's own buffers, for the stacks of
     tanh layers); for the families the fast engine does not train, the share of the step torch's profiler counts
     in matrix products;
  3. dev: the loss after --budget steps of the preset (its schedule over those steps), every dev example.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from makemore import api  # noqa: E402
from makemore.config import ConfigError  # noqa: E402
from makemore.engine.fast import FastEngine  # noqa: E402

NAMES = ROOT.parent / "shared" / "data" / "names.txt"
PRESETS = ("best_adamw", "deep", "wavenet", "transformer")
VARIANTS = {  # name -> overrides
    "fast": ["train.engine=fast"],
    "autograd": ["train.engine=autograd"],
    "autograd, compiled": ["train.engine=autograd", "train.compile=true"],
}


def setups(preset: str, data: str, threads: int) -> dict[str, api.Setup]:
    """The preset's run set up on each engine it can train on (the fast engine trains the stacks of tanh layers)."""
    runs = {}
    for name, extra in VARIANTS.items():
        cfg = api.compose([f"experiment={preset}", f"data.path={data}", f"device.threads={threads}", *extra])
        try:
            runs[name] = api.setup(cfg)
        except ConfigError:  # train.engine=fast does not support this family
            continue
    return runs


def stepper(run: api.Setup, steps: int):
    """A function running `steps` steps of the run's engine on fixed batches (lr held at the schedule's first)."""
    e, N, K = run.engine, run.loop.batch_size, run.model.replicas
    X, Y = run.data.X["train"], run.data.Y["train"]
    ix = torch.randint(0, len(Y), (steps, K, N), generator=torch.Generator().manual_seed(0))
    rows, targets = e.batches(X, Y, ix)
    picked = torch.empty(steps, *e.slot)
    lr = run.loop.schedule(0)

    def go():
        for i in range(steps):
            e.step(rows[i], targets[i], lr, picked[i])

    return go


def products(engine: FastEngine):
    """The fast step's matrix products alone, on its own shapes and buffers (results into scratch copies)."""
    fs = engine.fast_step
    mm = fs._mm
    calls = []
    for layer in fs.layers:
        dW, dx = torch.empty_like(layer.W), torch.empty_like(layer.dx)
        hpre = torch.empty_like(layer.hpre)
        calls += [(mm, (layer.inp, layer.Wp), hpre), (mm, (layer.inpT, layer.dh), dW), (mm, (layer.dh, layer.WT), dx)]
    logits, dWo, dh = torch.empty_like(fs.logits), torch.empty_like(fs.Wo), torch.empty_like(fs.layers[-1].dh)
    calls += [(mm, (fs.h_a, fs.Wop), logits), (mm, (fs.h_aT, fs.logits), dWo), (mm, (fs.logits, fs.WoT), dh)]

    def go():
        for f, args, out in calls:
            f(*args, out=out)

    return go


def profiled_share(go) -> float:
    """The share of go()'s CPU time torch's profiler counts in matrix products."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        go()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    mats = sum(
        e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
    )
    return mats / total if total else float("nan")


def step_table(preset: str, runs: dict, steps: int, rounds: int) -> None:
    cases = {name: stepper(run, steps) for name, run in runs.items()}
    warm = {}
    for name, go in cases.items():
        t0 = time.perf_counter()
        go()  # warm-up; torch.compile compiles here
        warm[name] = time.perf_counter() - t0
    fast = runs.get("fast")
    prods = products(fast.engine) if fast is not None else None
    if prods is not None:
        prods()
        cases["products"] = lambda: [prods() for _ in range(steps)]  # in each round: the same minute's speed
    best, ratios = _rounds(cases, steps, rounds)
    prod_us = best.pop("products", None)
    print(f"\nexperiment={preset}: {next(iter(runs.values())).model.num_params()} parameters, batch "
          f"{next(iter(runs.values())).loop.batch_size}; best of {rounds} x {steps} steps")  # fmt: skip
    print(f"{'engine':22s} {'us/step':>9s} {'steps/s':>8s} {'products':>9s} {'vs fast':>8s} {'warm-up s':>10s}")
    for name, us in best.items():
        share = prod_us / us if prods is not None else profiled_share(cases[name])
        vs = f"{us / best['fast']:.2f}x" if "fast" in best else ""
        print(f"{name:22s} {us:9.0f} {1e6 / us:8.0f} {share:8.0%}{'' if prods is not None else '*'} {vs:>8s} "
              f"{warm[name]:10.1f}")  # fmt: skip
    if prods is not None:
        print(f"products alone: {prod_us:.0f} us; the fast step takes {best['fast'] / prod_us:.2f}x their time "
              f"(best of each; the median of the rounds' ratios: {statistics.median(ratios):.2f}x)")  # fmt: skip
    else:
        print("* the share of the step torch's profiler counts in matrix products (no fast engine here)")


def _rounds(cases: dict, steps: int, rounds: int) -> tuple[dict, list]:
    """Each case's best µs per step over the rounds (every case once per round), and each round's ratio of the
    fast step to the products where both are timed."""
    best, ratios = {name: float("inf") for name in cases}, []
    for _ in range(rounds):
        this = {}
        for name, go in cases.items():
            t0 = time.perf_counter()
            go()
            this[name] = 1e6 * (time.perf_counter() - t0) / steps
        best = {name: min(best[name], us) for name, us in this.items()}
        if "products" in this and "fast" in this:
            ratios.append(this["fast"] / this["products"])
    return best, ratios


def budget_table(preset: str, data: str, threads: int, budget: int) -> None:
    print(f"dev loss after {budget} steps of experiment={preset} (its schedule over {budget} steps):")
    for name, extra in VARIANTS.items():
        overrides = [f"experiment={preset}", f"data.path={data}", f"device.threads={threads}", *extra]
        cfg = api.compose(overrides + [f"train.steps={budget}", f"train.eval_every={budget}", "samples=0"])
        try:
            run = api.setup(cfg)
        except ConfigError:
            continue
        progress = api.train(run)
        print(f"  {name:22s} dev {progress.evals[-1]['dev'][0]:.4f}  ({progress.seconds:.1f} s of training)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(NAMES))
    ap.add_argument("--presets", nargs="*", default=list(PRESETS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=2000, help="training steps for the dev comparison (0: none)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {args.threads} thread(s); data {args.data}")
    for preset in args.presets:
        step_table(preset, setups(preset, args.data, args.threads), args.steps, args.rounds)
        if args.budget:
            budget_table(preset, args.data, args.threads, args.budget)


if __name__ == "__main__":
    main()
