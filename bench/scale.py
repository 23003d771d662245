"""Data and evaluation at scale: a large word file loaded, and a run's final exact evaluation, against the time of
their own arithmetic, measured side by side in one invocation.

    python bench/scale.py                          # names.txt's names joined in pairs: 2M two-word names
    python bench/scale.py --words 500000 --threads 2

It writes the file itself (each name of names.txt followed by another, --words lines, in a temporary dir), then
  1. times makemore.data.load on it (read, vocabulary, the lecture's split, the contexts), the lecture config;
  2. times the final evaluation of a lecture-sized MLP over every train and dev example (what a run's last
     evaluation does) against its two matrix products alone, at the same chunk size, on the same threads:
     the evaluation a run does (makemore/models/plain_eval.c on the CPU) and torch's kernels, the same model.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from makemore.data import load, read_words  # noqa: E402
from makemore.models import MLP  # noqa: E402
from makemore.models.base import CHUNK  # noqa: E402

NAMES = ROOT.parent / "shared" / "data" / "names.txt"


def two_word_names(source: Path, n: int, seed: int = 1) -> list[str]:
    """n lines of two names each: every name of `source` in turn, followed by one drawn at random."""
    names = read_words(str(source))
    rng = random.Random(seed)
    return [f"{names[i % len(names)]} {rng.choice(names)}" for i in range(n)]


@torch.no_grad()
def products_seconds(model: MLP, X: torch.Tensor, chunk: int = CHUNK) -> float:
    """The evaluation's two matrix products alone (emb W1 + b1, h Wout + bout) over X, chunk by chunk."""
    W1, b1, Wo, bo = (t[0].detach() for t in (model.W1, model.b1, model.Wout, model.bout))
    n = min(chunk, X.shape[0])
    emb, h = torch.randn(n, W1.shape[0]), torch.empty(n, W1.shape[1])
    logits = torch.empty(n, Wo.shape[1])
    t0 = time.perf_counter()
    for i in range(0, X.shape[0], chunk):
        m = min(chunk, X.shape[0] - i)
        torch.addmm(b1, emb[:m], W1, out=h[:m])
        torch.addmm(bo, h[:m], Wo, out=logits[:m])
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(NAMES), help="the names to pair (default: names.txt)")
    ap.add_argument("--words", type=int, default=2_000_000)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (a run's evaluation uses all cores)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.txt"
        path.write_text("\n".join(two_word_names(Path(args.data), args.words)) + "\n")
        t0 = time.perf_counter()
        data = load(str(path), [0.8, 0.1, 0.1], 42, 3)
        load_s = time.perf_counter() - t0
    ex = data.examples()
    print(f"torch {torch.__version__}, {args.threads} thread(s); {args.words} two-word names, vocabulary "
          f"{len(data.vocab)}, examples {ex}")  # fmt: skip
    print(f"load (read, vocabulary, split, contexts): {load_s:.2f} s")
    model = MLP(len(data.vocab), 3, 10, 200, init="scaled")
    X = torch.cat([data.X["train"], data.X["dev"]])
    Y = torch.cat([data.Y["train"], data.Y["dev"]])
    products = min(products_seconds(model, X) for _ in range(2))
    macs = X.shape[0] * (model.W1.shape[1] * model.W1.shape[2] + model.Wout.shape[1] * model.Wout.shape[2])
    print(f"the evaluation's two products alone ({X.shape[0]} examples of train and dev, the lecture's MLP): "
          f"{products:.2f} s ({2 * macs / products / 1e9:.0f} GFLOP/s)")  # fmt: skip
    torch_path = MLP(len(data.vocab), 3, 10, 200, init="scaled")
    torch_path.load_state_dict(model.state_dict())
    torch_path._plain_eval_library = lambda: None  # the same model on torch's kernels (what MAKEMORE_FUSED=0 runs)
    for name, m in (("plain_eval.c", model), ("torch's kernels", torch_path)):
        if name == "plain_eval.c" and model._plain_eval_library() is None:
            print("plain_eval.c: not built here (the log says why)")
            continue
        t0 = time.perf_counter()
        loss = m.evaluate(X, Y)
        seconds = time.perf_counter() - t0
        print(f"final evaluation, {name}: {seconds:.2f} s, {seconds / products:.2f}x the products' time "
              f"(loss {loss.item():.6f})")  # fmt: skip


if __name__ == "__main__":
    main()
