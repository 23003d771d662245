"""The best preset's training step in fp32 and bf16 (train.precision), side by side in one invocation.

    python bench/precision.py                   # step table, then 3000 training steps of each (about 2 minutes)
    python bench/precision.py --steps 60000     # the preset's full budget: both trained to the end (~17 min, 2 cores)

Prints, on the threads a run of the preset uses (all cores; --threads to change):
  1. the peak GFLOP/s of a 1024 x 1024 product in fp32 and in bf16 (this machine's practical ceilings);
  2. for each precision, the step's six products alone (µs and GFLOP/s, % of that precision's peak), the
     whole fast step (µs), and the step's time over its products' (the elementwise share); rows interleaved,
     best of --repeats rounds of --step-count steps on the same batches; where the step fuses its layer norm
     (fused.py), the same step with torch's kernels beside it; then the medians over the rounds of the ratios
     within each round (step/products, bf16/fp32, fused/torch's), which this drifting VM moves less than bests;
  3. the lecture config's step (batch 32, 1 thread, as its runs use) in both precisions, the same way;
  4. experiments/best.yaml (composed with Hydra, as `python -m makemore.run experiment=best` does), trained for
     --steps steps in each precision through makemore.train.fit, the cosine schedule over those steps, the same
     seed and batches, the two alternating every --chunk steps (1000): training seconds (the steps alone, as a run's
     steps/s), µs/step, train and dev loss (every example), the bf16/fp32 speed ratio and the dev gap.
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

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from makemore import data as data_mod  # noqa: E402
from makemore import engine as engines  # noqa: E402
from makemore import models  # noqa: E402
from makemore import schedule as schedule_mod  # noqa: E402
from makemore.config import to_dict  # noqa: E402
from makemore.device import cores  # noqa: E402
from makemore.engine.fast.step import FastStep  # noqa: E402
from makemore.hydra_app import register_configs, register_resolvers  # noqa: E402
from makemore.train import Loop, Progress, fit  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import peak_flops, step_macs  # noqa: E402

NAMES = ROOT.parent / "shared" / "data" / "names.txt"
PRECISIONS = ("fp32", "bf16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def preset(data_path: str, *overrides: str) -> dict:
    register_configs()
    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return to_dict(compose("config", overrides=[f"data.path={data_path}", *overrides]))


def products(m: dict, vocab: int, batch: int, dtype: torch.dtype):
    """The six products of one fast step at the model's shapes and layouts (engine/fast/step.py): forward
    [emb|1] W1a and [h|1] W2a; backward dlogits W2^T, dhpre W1^T, [h|1]^T dlogits, [emb|1]^T dhpre. Returns
    (run, flops)."""
    BE, H, N = m["block_size"] * m["emb"], m["hidden"], batch
    Vp = -(-vocab // 16) * 16

    def r(*shape):
        return torch.randn(*shape).to(dtype)

    emb_a, W1a, h_a, W2a, dl, dh = r(N, BE + 1), r(BE + 1, H), r(N, H + 1), r(H + 1, Vp), r(N, Vp), r(N, H)
    hpre, logits, dh_out, demb = r(N, H), r(N, Vp), r(N, H), r(N, BE)
    gW1, gW2 = r(BE + 1, H), r(H + 1, Vp)
    W1T, W2T = W1a[:BE].t(), W2a[:H].t()

    def run():
        torch.mm(emb_a, W1a, out=hpre)
        torch.mm(h_a, W2a, out=logits)
        torch.mm(dl, W2T, out=dh_out)
        torch.addmm(demb, dh, W1T, beta=0, alpha=0.5, out=demb)
        torch.addmm(gW2, h_a.t(), dl, beta=0, alpha=0.5, out=gW2)
        torch.addmm(gW1, emb_a.t(), dh, beta=0, alpha=0.5, out=gW1)

    return run, 2 * step_macs(N, m["block_size"], m["emb"], H, Vp)


def step_case(conf: dict, ds, precision: str, batches, fused: bool = True):
    """A fast engine of the config's model in `precision`: a function running its steps on `batches`, and whether
    its step fuses the layer norm (fused.py). fused=False: torch's layer norm and tanh kernels (plain SGD only)."""
    m, opt = conf["model"], conf["optimizer"]
    model = models.build(m, len(ds.vocab), seed=conf["seed"])
    eng = engines.make("fast", model, conf["train"]["batch_size"], opt, precision)
    if not fused:
        N, wd = conf["train"]["batch_size"], opt["weight_decay"]
        eng.fast_step = FastStep(eng.layout, N, wd, precision=precision, fused=False)
    rows, targets = eng.batches(ds.X["train"], ds.Y["train"], batches)
    picked = torch.empty(len(rows), *eng.slot)

    def run():
        for i in range(len(rows)):
            eng.step(rows[i], targets[i], 0.01, picked[i])

    return run, eng.fast_step.fused


def rounds(cases: dict, repeats: int, per_call: int) -> dict:
    """µs per step (or per call when per_call=1) of each case in each of `repeats` rounds; every round runs
    every case once, so a slow minute of the machine falls on all the rows of that round."""
    times = {k: [] for k in cases}
    for f in cases.values():
        f()  # warm-up
    for _ in range(repeats):
        for k, f in cases.items():
            t0 = time.perf_counter()
            f()
            times[k].append(1e6 * (time.perf_counter() - t0) / per_call)
    return times


def step_table(conf: dict, ds, threads: int, steps: int, repeats: int, label: str) -> dict:
    torch.set_num_threads(threads)
    m, N = conf["model"], conf["train"]["batch_size"]
    ix = torch.randint(0, ds.X["train"].shape[0], (steps, 1, N), generator=torch.Generator().manual_seed(0))
    peaks = {p: peak_flops(1024, 30, DTYPES[p]) for p in PRECISIONS}
    prods = {p: products(m, len(ds.vocab), N, DTYPES[p]) for p in PRECISIONS}
    cases = {}
    for p in PRECISIONS:
        cases[("step", p)], compare = step_case(conf, ds, p, ix)
    if compare:  # the step fuses its layer norm: the step with torch's kernels in the same rounds (before/after)
        cases.update({("torch", p): step_case(conf, ds, p, ix, fused=False)[0] for p in PRECISIONS})
    cases.update({("products", p): (lambda f=prods[p][0]: [f() for _ in range(steps)]) for p in PRECISIONS})
    times = rounds(cases, repeats, steps)
    us = {k: min(v) for k, v in times.items()}

    def per_round(a, b) -> float:  # the median over the rounds of a's time over b's in the same round
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    print(
        f"\n{label}: block {m['block_size']}, emb {m['emb']}, hidden {m['hidden']}, norm {m['norm']}, batch {N}; "
        f"{threads} thread(s); best of {repeats} x {steps} steps"
    )
    print(
        f"{'precision':10s} {'peak GFLOP/s':>13s} {'products µs':>12s} {'GFLOP/s':>8s} {'of peak':>8s} "
        f"{'step µs':>8s} {'step/products':>14s} {'steps/s':>8s}"
    )
    for p in PRECISIONS:
        flops = prods[p][1]
        rate = flops / us[("products", p)] / 1e3
        print(
            f"{p:10s} {peaks[p] / 1e9:13.0f} {us[('products', p)]:12.0f} {rate:8.0f} {rate / (peaks[p] / 1e9):8.0%} "
            f"{us[('step', p)]:8.0f} {us[('step', p)] / us[('products', p)]:13.2f}x {1e6 / us[('step', p)]:8.0f}"
        )
    print(f"bf16 step: {us[('step', 'fp32')] / us[('step', 'bf16')]:.2f}x the fp32 step's speed")
    if compare:
        print("the same step with torch's layer norm and tanh kernels instead of the fused ones (fused_norm.c):")
        for p in PRECISIONS:
            t = us[("torch", p)]
            print(
                f"{p:10s} step µs {t:6.0f}  step/products {t / us[('products', p)]:.2f}x  "
                f"fused: {us[('step', p)] / t:.2f}x its time"
            )
        ratio = us[("torch", "fp32")] / us[("torch", "bf16")]
        print(f"bf16 step with torch's kernels: {ratio:.2f}x the fp32 step's speed")
    # bests of a drifting machine can come from different minutes; ratios within one round cannot
    print(f"medians over the {repeats} rounds of the ratios within a round:")
    sp = ", ".join(f"{p} {per_round(('step', p), ('products', p)):.2f}x" for p in PRECISIONS)
    print(f"  step/products: {sp}; bf16 step: {per_round(('step', 'fp32'), ('step', 'bf16')):.2f}x fp32's speed")
    if compare:
        fz = ", ".join(f"{p} {per_round(('step', p), ('torch', p)):.2f}x" for p in PRECISIONS)
        print(f"  fused step over the step with torch's kernels: {fz} the time")
    return us


def train_both(conf: dict, ds, threads: int, steps: int, chunk: int = 1000) -> None:
    """Both precisions trained in alternating stretches of `chunk` steps (fit resumes from its Progress, drawing
    the batches an uninterrupted run draws), so a slower stretch of this shared machine falls on both alike; the
    order flips every stretch (fp32 bf16 bf16 fp32 ...), so neither always runs first."""
    torch.set_num_threads(threads)
    print(
        f"\nexperiment=best trained {steps} steps in each precision (cosine over {steps} steps, {threads} threads; "
        f"the two alternate every {chunk} steps)"
    )
    runs = {}
    for p in PRECISIONS:
        model = models.build(conf["model"], len(ds.vocab), seed=conf["seed"])
        runs[p] = model, engines.make("fast", model, conf["train"]["batch_size"], conf["optimizer"], p)
    schedule = schedule_mod.build(OmegaConf.create(conf["schedule"]), steps)
    progress = {p: Progress() for p in PRECISIONS}
    stretch = {p: [] for p in PRECISIONS}  # seconds of each stretch
    for i, end in enumerate([*range(chunk, steps, chunk), steps]):
        for p in PRECISIONS[:: (-1) ** i]:
            before = progress[p].seconds
            loop = Loop(steps=end, batch_size=conf["train"]["batch_size"], schedule=schedule, seed=conf["seed"],
                        eval_every=steps, checkpoint_every=chunk)  # fmt: skip
            fit(*runs[p], ds, loop, progress=progress[p])
            stretch[p].append(progress[p].seconds - before)
    print(f"{'precision':10s} {'train s':>8s} {'µs/step':>8s} {'train':>8s} {'dev':>8s}")
    res = {}
    for p in PRECISIONS:
        ev, sec = progress[p].evals[-1], progress[p].seconds
        res[p] = (sec, ev["train"][0], ev["dev"][0])
        print(f"{p:10s} {sec:8.1f} {1e6 * sec / steps:8.0f} {res[p][1]:8.5f} {res[p][2]:8.5f}")
    (s32, _, d32), (s16, _, d16) = res["fp32"], res["bf16"]
    print(f"bf16 trains {s32 / s16:.2f}x as fast as fp32; dev bf16 - fp32 = {d16 - d32:+.5f}")
    # each stretch's ratio against its neighbour of the other precision: how the ratio spreads as the machine's
    # speed drifts (a busy stretch slows both; the quartiles show how much it moves the ratio)
    if len(stretch["fp32"]) < 2:
        return
    q = statistics.quantiles([a / b for a, b in zip(stretch["fp32"], stretch["bf16"])], n=4)
    print(f"per {chunk}-step stretch, bf16's speed over fp32's: median {q[1]:.2f}x, quartiles {q[0]:.2f}-{q[2]:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(NAMES))
    ap.add_argument("--threads", type=int, default=cores(), help="torch threads (default: all cores, as a run)")
    ap.add_argument("--steps", type=int, default=3000, help="training steps per precision (0: only the step table)")
    ap.add_argument("--chunk", type=int, default=1000, help="training steps per alternation of the precisions")
    ap.add_argument("--step-count", type=int, default=200, help="steps per timed round of the step table")
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    best = preset(args.data, "experiment=best")
    ds = data_mod.load(args.data, best["data"]["splits"], best["data"]["seed"], best["model"]["block_size"])
    print(f"torch {torch.__version__}, {cores()} cores; data {args.data}")
    step_table(best, ds, args.threads, args.step_count, args.repeats, "experiment=best")
    lecture = preset(args.data, "experiment=lecture")
    lds = data_mod.load(args.data, lecture["data"]["splits"], lecture["data"]["seed"], lecture["model"]["block_size"])
    step_table(lecture, lds, 1, args.step_count * 10, args.repeats, "experiment=lecture")
    if args.steps:
        train_both(best, ds, args.threads, args.steps, args.chunk)


if __name__ == "__main__":
    main()
