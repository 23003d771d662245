"""What diagnostics (train.diagnose_every) cost: the same run with and without them, in one invocation, interleaved.

    python bench/diagnostics.py                                  # the lecture's config and experiment=best
    python bench/diagnostics.py --presets lecture --steps 40000 --rounds 3

For each preset (experiments/<name>.yaml, as `python -m makemore.run experiment=<name>` composes it), rounds of
two runs of --steps steps of its loop (train.fit, the CLI's loop; the order alternates between rounds, so a slow
minute of a shared machine falls on both arms): one with train.diagnose_every=0, one with a diagnosis every
--steps / --diagnoses steps (also at step 0 and the last step). A run's training phase is its steps (the loop's step
seconds, which count a diagnosed step's parameter snapshot) and its diagnoses (probe, health rules; no TensorBoard),
evaluations left out (the same in both). Printed, medians over the rounds:
  - step ms: a training step without diagnoses;
  - diagnosis ms: one diagnosis (train._Diagnoser's call, timed);
  - measured: the with-run's training phase over the without-run's, less 1, at this bench's interval (on a shared
    machine the steps' own noise can outweigh the diagnoses);
  - at the default: the cost at the preset's own default (a diagnosis at every evaluation of its full run:
    train.steps / eval_every + 1 of them in train.steps steps), the target being <= 5%.
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

from makemore import api, train  # noqa: E402

NAMES = ROOT.parent / "shared" / "data" / "names.txt"
STEPS = {"lecture": 20000, "best": 120}  # 10-30 s per run on a 2-core machine


class Timed:
    """train._Diagnoser's calls (probe, health rules, hooks) timed: seconds and calls so far."""

    seconds, calls = 0.0, 0

    def __init__(self):
        call = train._Diagnoser.__call__

        def timed(diagnoser, *args):
            t0 = time.perf_counter()
            call(diagnoser, *args)
            Timed.seconds += time.perf_counter() - t0
            Timed.calls += 1

        train._Diagnoser.__call__ = timed


def one_run(preset: str, data_path: str, steps: int, every: int, data=None):
    """(the training phase's seconds: the loop's step seconds plus its diagnoses; the diagnoses' seconds, their
    number; the dataset) of one run."""
    overrides = [f"experiment={preset}", f"data.path={data_path}", f"train.steps={steps}", f"train.eval_every={steps}",
                 f"train.checkpoint_every={steps}", f"train.diagnose_every={every}"]  # fmt: skip
    run = api.setup(api.compose(overrides), data=data)
    seconds, calls = Timed.seconds, Timed.calls
    progress = api.train(run)
    probes = Timed.seconds - seconds
    return progress.seconds + probes, probes, Timed.calls - calls, run.data


def default_density(preset: str, data_path: str) -> tuple[int, int]:
    """(diagnoses, steps) of the preset's full run at the default train.diagnose_every."""
    run = api.compose([f"experiment={preset}", f"data.path={data_path}"])
    from makemore.assemble import loop_settings

    loop = loop_settings(run, run.train.steps)
    return len(range(0, loop.steps + 1, loop.diagnose_every)) + (loop.steps % loop.diagnose_every != 0), loop.steps


def bench(preset: str, data_path: str, steps: int, diagnoses: int, rounds: int) -> None:
    every = max(1, steps // diagnoses)
    *_, data = one_run(preset, data_path, max(1, steps // 10), every)  # warm-up (first allocations, kernels)
    step_s, per_diag, measured = [], [], []
    for r in range(rounds):
        results = {}
        for e in (0, every) if r % 2 == 0 else (every, 0):
            results[e] = one_run(preset, data_path, steps, e, data)[:3]
        (t0, _, _), (t1, probes, n) = results[0], results[every]
        step_s.append(t0 / steps)
        per_diag.append(probes / n)
        measured.append(t1 / t0 - 1)
    n_full, steps_full = default_density(preset, data_path)
    step, diag = statistics.median(step_s), statistics.median(per_diag)
    at_default = n_full * diag / (steps_full * step)
    print(
        f"{preset:8s} step {step * 1e3:7.3f} ms  diagnosis {diag * 1e3:8.1f} ms  "
        f"measured {statistics.median(measured):+6.1%} (a diagnosis every {every} steps; median of {rounds} rounds)  "
        f"at the default {at_default:+6.2%} ({n_full} diagnoses in {steps_full} steps)",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=list(STEPS))
    p.add_argument("--data", default=str(NAMES), help="the word file (default: the lecture's names.txt beside this)")
    p.add_argument("--steps", type=int, default=None, help="steps per run (default: per preset)")
    p.add_argument("--diagnoses", type=int, default=10, help="diagnoses per run, besides step 0")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    if not Path(a.data).is_file():
        sys.exit(f"no word file at {a.data} (--data)")
    Timed()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for preset in a.presets:
        bench(preset, a.data, a.steps or STEPS.get(preset, 1000), a.diagnoses, a.rounds)


if __name__ == "__main__":
    main()
