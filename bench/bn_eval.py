"""Batch-norm evaluation with running against calibrated statistics (model.bn_eval), measured in one training run
per setting: the run trains with the loop's own evaluations, and at each evaluation the model is scored both ways
(the calibration restores the running statistics after, so both modes see the same trajectory).

    python bench/bn_eval.py --data names.txt                 # both settings below (~10 min on 2 cores)
    python bench/bn_eval.py --data names.txt --only trial0   # or --only best_adamw
    python bench/bn_eval.py --runs outputs/runs/<a> ...      # finished runs' checkpoints, scored both ways

Settings:
  trial0      trial 0 of hparams_search=mlp_wider (its seeded sampler's first point: AdamW, 2 batch-normed layers of
              400, block 10, emb 32, batch 256, cosine lr 0.000504 -> 1e-5 over 60k steps, weight decay 1.79), trained
              to 5000 steps, the pruner's first rung, evaluated as its search evaluates (20,000 examples per split);
  best_adamw  experiment=best_adamw, its full 60k steps, every evaluation (all of names.txt's examples).

Prints per evaluation: the mean minibatch loss of the last 100 steps (TensorBoard's minibatch/loss point), and
train and dev loss with the running and with the calibrated statistics; then the gap minibatch -> train for each.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from makemore import api  # noqa: E402
from makemore.train import Hooks, eval_subsets, evaluate  # noqa: E402

TRIAL0 = (
    "hparams_search=mlp_wider",
    "optimizer=adamw",
    "model.layers=2",
    "model.direct=false",
    "model.block_size=10",
    "model.emb=32",
    "model.norm=batch",
    "train.batch_size=256",
    "schedule.lr=0.000503609429275119",
    "optimizer.weight_decay=1.7939843612720472",
    "schedule.min_lr=1e-05",
    "model.hidden=400",
)
MODES = ("running", "calibrated")
SETTINGS = {"trial0": (TRIAL0, 5000), "best_adamw": (("experiment=best_adamw",), None)}


class Both(Hooks):
    """At each evaluation: the minibatch loss of the last 100 steps, and both modes' train and dev losses."""

    def __init__(self, run, subsets, final_all: bool):
        self.run, self.subsets, self.final_all, self.rows, self.last = run, subsets, final_all, [], None

    def on_segment(self, start, losses, lrs, progress):
        self.last = progress.minibatch_losses()[-100:].mean().item()

    def on_eval(self, step, losses):
        model, row = self.run.model, {"step": step, "minibatch": self.last}
        # a run's last evaluation scores every example; the trial stopped at its rung scores its periodic subset
        subsets = None if step == self.run.loop.steps and self.final_all else self.subsets
        for mode in MODES:
            model.bn_eval = mode
            ev = evaluate(model, self.run.data, threads=self.run.eval_threads, subsets=subsets)
            row |= {f"{mode}_train": ev["train"].mean().item(), f"{mode}_dev": ev["dev"].mean().item()}
        model.bn_eval = "running"
        self.rows.append(row)
        modes = "  ".join(f"{m}: train {row[f'{m}_train']:.4f} dev {row[f'{m}_dev']:.4f}" for m in MODES)
        print(f"step {step:6d}  minibatch {row['minibatch']:.4f}  {modes}", flush=True)


def measure(name: str, data_path: str) -> list[dict]:
    overrides, stop = SETTINGS[name]
    run = api.setup(api.compose([*overrides, f"data.path={data_path}", "model.bn_eval=running"]))
    if stop:  # the trial's schedule (over train.steps), stopped at the pruner's first rung
        run.loop.steps = stop
    hooks = Both(run, eval_subsets(run.data, run.loop.eval_examples), final_all=stop is None)
    print(f"== {name}: {' '.join(overrides)}; {run.loop.steps} steps, evaluation every {run.loop.eval_every}")
    t0 = time.perf_counter()
    api.train(run, hooks)
    print(f"   {time.perf_counter() - t0:.0f} s")
    return hooks.rows


def score_runs(runs: list[str]) -> None:
    """Each finished run's final train and dev loss (every example) with its running and its calibrated
    statistics, on the data and split its checkpoint records."""
    from makemore.data import load

    for path in runs:
        model, _, state = api.load_run(path)
        d = state["config"]["data"]
        data = load(d["path"], d["splits"], d["seed"], model.block_size, d.get("limit_words"))
        scores = []
        for mode in MODES:
            model.bn_eval = mode
            ev = evaluate(model, data, ("train", "dev"))
            scores.append(f"{mode}: train {ev['train'].mean().item():.4f} dev {ev['dev'].mean().item():.4f}")
        print(f"{path} (step {state['step']}): {'  '.join(scores)}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "names.txt"))
    p.add_argument("--only", choices=list(SETTINGS))
    p.add_argument("--runs", nargs="+", help="finished run dirs: score their checkpoints both ways instead")
    args = p.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    print(f"torch {torch.__version__}, commit {commit.stdout.strip()}, {torch.get_num_threads()} threads")
    if args.runs:
        score_runs(args.runs)
        return
    for name in [args.only] if args.only else list(SETTINGS):
        rows = measure(name, args.data)
        last = rows[-1]
        for mode in ("running", "calibrated"):
            gap = last[f"{mode}_train"] - last["minibatch"]
            print(
                f"   {mode:10s} at step {last['step']}: train - minibatch = {gap:+.4f}, dev {last[f'{mode}_dev']:.4f}"
            )


if __name__ == "__main__":
    main()
