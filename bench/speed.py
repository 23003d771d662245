"""Training speed against the lecture's notebook loop, measured side by side in one invocation.

    python bench/speed.py                    # the lecture config, 200k steps each (about 4 minutes)
    python bench/speed.py --steps 20000      # quicker, ratios only roughly comparable in loss

Runs, on the same data (names.txt, the lecture's split) and config (block 3, emb 10, hidden 200,
batch 32, lr 0.1 then 0.01 at half-way), with torch on 1 thread:
  1. the lecture's notebook loop: plain tensors, loss.backward(), p.data += -lr * p.grad,
     lossi.append(loss.log10().item()) every step;
  2. the framework's training loop (makemore.train.fit) with 1 replica;
  3. the framework with 8 replicas in one process (one step advances all 8 models);
  4. the framework on the autograd engine (Net + torch.optim SGD), and AdamW on both engines;
and prints µs per step, the ratios, and the final dev loss of each, so speed is never bought with a
worse model. It also prints the arithmetic floor of one model-step: the time of its six matrix products
at the rate this core reaches on a large product, which bounds what batching replicas can gain (batching
removes per-operation overhead, not arithmetic). Then the start-up time of `python -m makemore.run train.steps=0`.

    python bench/speed.py --optimizers       # only the engines x optimizers step table (µs per step, side by side)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from makemore import data as data_mod  # noqa: E402
from makemore import engine as engines  # noqa: E402
from makemore.config import AdamWConfig, SGDConfig  # noqa: E402
from makemore.engine.fast import FastEngine  # noqa: E402
from makemore.models import MLP  # noqa: E402
from makemore.schedule import step_schedule  # noqa: E402
from makemore.train import Loop, fit  # noqa: E402

NAMES = ROOT.parent / "shared" / "data" / "names.txt"


def notebook_loop(Xtr, Ytr, Xdev, Ydev, steps: int, milestone: int):
    """The lecture's cells, verbatim in spirit."""
    g = torch.Generator().manual_seed(2147483647)
    C = torch.randn((27, 10), generator=g)
    W1 = torch.randn((30, 200), generator=g)
    b1 = torch.randn(200, generator=g)
    W2 = torch.randn((200, 27), generator=g)
    b2 = torch.randn(27, generator=g)
    parameters = [C, W1, b1, W2, b2]
    for p in parameters:
        p.requires_grad = True
    lossi = []
    torch.manual_seed(2147483647)
    t0 = time.perf_counter()
    for i in range(steps):
        ix = torch.randint(0, Xtr.shape[0], (32,))
        emb = C[Xtr[ix]]
        h = torch.tanh(emb.view(-1, 30) @ W1 + b1)
        logits = h @ W2 + b2
        loss = F.cross_entropy(logits, Ytr[ix])
        for p in parameters:
            p.grad = None
        loss.backward()
        lr = 0.1 if i < milestone else 0.01
        for p in parameters:
            p.data += -lr * p.grad
        lossi.append(loss.log10().item())
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        h = torch.tanh(C[Xdev].view(-1, 30) @ W1 + b1)
        dev = F.cross_entropy(h @ W2 + b2, Ydev).item()
    return seconds, dev


SGD = asdict(SGDConfig())  # the defaults of the optimizer group
MOMENTUM = SGD | {"momentum": 0.9}
ADAMW = asdict(AdamWConfig())


def framework_loop(ds, steps: int, milestone: int, replicas: int, engine: str = "fast", optimizer=SGD, lrs=(0.1, 0.01)):
    model = MLP(len(ds.vocab), block_size=3, emb=10, hidden=200, init="lecture", replicas=replicas)
    eng = engines.make(engine, model, 32, optimizer)
    loop = Loop(steps=steps, batch_size=32, schedule=step_schedule(list(lrs), [milestone]), seed=2147483647,
                eval_every=steps, checkpoint_every=steps)  # fmt: skip
    progress = fit(model, eng, ds, loop)
    dev = progress.evals[-1]["dev"]
    return progress.seconds, statistics.fmean(dev), (statistics.stdev(dev) if len(dev) > 1 else 0.0)


def engine_step_us(ds, steps: int, repeats: int = 3) -> list[tuple[str, float]]:
    """µs per step of each engine x optimizer (and the fast engine's AdamW kernels) at the lecture config,
    1 replica, the steps alone (batches drawn beforehand); rows interleaved, best of `repeats`."""
    Xtr, Ytr = ds.X["train"], ds.Y["train"]
    cases = [
        ("fast, sgd (fused into the products)", "fast", SGD, "closed"),
        ("fast, sgd momentum 0.9 (closed form)", "fast", MOMENTUM, "closed"),
        ("fast, adamw (closed form)", "fast", ADAMW, "closed"),
        ("fast, adamw (torch fused kernel)", "fast", ADAMW, "fused"),
        ("fast, adamw (torch foreach kernels)", "fast", ADAMW, "foreach"),
        ("autograd, sgd (torch.optim.SGD)", "autograd", SGD, None),
        ("autograd, adamw (torch.optim.AdamW)", "autograd", ADAMW, None),
    ]
    ix = torch.randint(0, Xtr.shape[0], (steps, 1, 32), generator=torch.Generator().manual_seed(0))
    best = {name: float("inf") for name, *_ in cases}
    for _ in range(repeats):
        for name, engine, opt, impl in cases:
            model = MLP(len(ds.vocab), block_size=3, emb=10, hidden=200, init="scaled")
            if engine == "fast":
                eng = FastEngine(model, 32, opt, impl=impl)
            else:
                eng = engines.make(engine, model, 32, opt)
            rows, targets = eng.batches(Xtr, Ytr, ix)
            picked = torch.empty(steps, *eng.slot)
            lr = 0.001 if opt["name"] == "adamw" else 0.01
            t0 = time.perf_counter()
            for i in range(steps):
                eng.step(rows[i], targets[i], lr, picked[i])
            best[name] = min(best[name], 1e6 * (time.perf_counter() - t0) / steps)
    return list(best.items())


def print_engine_table(ds, steps: int) -> None:
    rows = engine_step_us(ds, steps)
    ref = dict(rows)
    print(f"{'engine, optimizer (lecture config, 1 replica)':44s} {'us/step':>9s} {'steps/s':>9s}")
    for name, us in rows:
        print(f"{name:44s} {us:9.1f} {1e6 / us:9.0f}")
    fast_adamw = min(v for k, v in rows if k.startswith("fast, adamw"))
    print(
        f"adamw: fast engine (best kernel) {ref['autograd, adamw (torch.optim.AdamW)'] / fast_adamw:.2f}x the "
        f"autograd engine's steps/s"
    )


def step_macs(batch: int, block: int, emb: int, hidden: int, width: int) -> int:
    """Multiply-adds of one model-step's six products, as engine/fast/step.py issues them (bias rows and the padded
    output width included): h = [emb|1] W1a, logits = [h|1] W2a, dh = dlogits W2^T, demb = dhpre W1^T,
    dW2a = [h|1]^T dlogits, dW1a = [emb|1]^T dhpre."""
    fan_in = block * emb
    return batch * (2 * (fan_in + 1) * hidden + 2 * (hidden + 1) * width + width * hidden + hidden * fan_in)


def peak_flops(n: int = 512, reps: int = 50, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of a large square product in `dtype` on the current threads: this core's practical ceiling."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    c = torch.empty(n, n, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b, out=c)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b, out=c)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def startup_seconds(runs: int = 3) -> float:
    times = []
    with tempfile.TemporaryDirectory() as d:
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "makemore.run", "train.steps=0", "samples=0"],
                cwd=d,
                check=True,
                capture_output=True,
            )
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200000)
    ap.add_argument("--data", default=str(NAMES))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-startup", action="store_true")
    ap.add_argument("--optimizers", action="store_true", help="only the engines x optimizers step table")
    ap.add_argument("--engine-steps", type=int, default=5000, help="steps per row of that table")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = data_mod.load(args.data, [0.8, 0.1, 0.1], 42, 3)
    Xtr, Ytr, Xdev, Ydev = ds.X["train"], ds.Y["train"], ds.X["dev"], ds.Y["dev"]
    milestone = args.steps // 2
    if args.optimizers:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {args.engine_steps} steps per row")
        print_engine_table(ds, args.engine_steps)
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} cores; "
        f"{args.steps} steps, lecture config, data {args.data}"
    )

    nb_s, nb_dev = notebook_loop(Xtr, Ytr, Xdev, Ydev, args.steps, milestone)
    fw_s, fw_dev, _ = framework_loop(ds, args.steps, milestone, 1)
    k8_s, k8_dev, k8_std = framework_loop(ds, args.steps, milestone, 8)
    ag_s, ag_dev, _ = framework_loop(ds, args.steps, milestone, 1, engine="autograd")
    fa_s, fa_dev, _ = framework_loop(ds, args.steps, milestone, 1, optimizer=ADAMW, lrs=(0.01, 0.001))
    aa_s, aa_dev, _ = framework_loop(ds, args.steps, milestone, 1, "autograd", optimizer=ADAMW, lrs=(0.01, 0.001))

    us = lambda s: 1e6 * s / args.steps  # noqa: E731
    print(f"{'loop':34s} {'us/step':>9s} {'model-steps/s':>14s} {'vs notebook':>12s} {'dev loss':>16s}")
    print(f"{'notebook (lecture)':34s} {us(nb_s):9.1f} {args.steps / nb_s:14.0f} {1.0:11.2f}x {nb_dev:16.4f}")
    print(f"{'framework, 1 replica':34s} {us(fw_s):9.1f} {args.steps / fw_s:14.0f} {nb_s / fw_s:11.2f}x {fw_dev:16.4f}")
    print(
        f"{'framework, 8 replicas':34s} {us(k8_s):9.1f} {8 * args.steps / k8_s:14.0f} {8 * nb_s / k8_s:11.2f}x "
        f"{k8_dev:9.4f} ± {k8_std:.4f}"
    )
    for name, sec, dev in (
        ("framework, autograd engine, sgd", ag_s, ag_dev),
        ("framework, fast engine, adamw", fa_s, fa_dev),
        ("framework, autograd engine, adamw", aa_s, aa_dev),
    ):
        print(f"{name:34s} {us(sec):9.1f} {args.steps / sec:14.0f} {nb_s / sec:11.2f}x {dev:16.4f}")
    print(f"adamw (lr 0.01 then 0.001): fast engine {aa_s / fa_s:.2f}x the autograd engine's steps/s")
    print(f"8 replicas vs 8 separate framework runs (8 x the 1-replica time): {8 * fw_s / k8_s:.2f}x model-steps/s")
    print(f"8 replicas vs 8 separate notebook runs: {8 * nb_s / k8_s:.2f}x model-steps/s")
    print(f"dev loss, framework - notebook: {fw_dev - nb_dev:+.4f}")
    width = FastEngine(MLP(len(ds.vocab)), 32, SGD).layout.storage["W2a"].shape[2]
    macs, flops = step_macs(32, 3, 10, 200, width), peak_flops()
    floor_us = 1e6 * 2 * macs / flops
    print(
        f"arithmetic floor: {macs / 1e6:.2f} M multiply-adds per model-step at {flops / 1e9:.0f} GFLOP/s "
        f"(512x512 product) = {floor_us:.1f} us, so batching replicas of this step can give at most "
        f"{us(fw_s) / floor_us:.2f}x the 1-replica model-steps/s"
    )
    if not args.skip_startup:
        print(f"start-up: python -m makemore.run train.steps=0 takes {startup_seconds():.2f} s (median of 3)")


if __name__ == "__main__":
    main()
