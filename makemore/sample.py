"""Generate words from a trained model, and the `python -m makemore.sample RUN_DIR` command.

Sampling follows the lecture: start from the boundary token, draw the next character from
softmax(logits / temperature) with torch.multinomial, append it, stop at the boundary. The model reads what it
needs of the tokens so far (a context model its last block_size, a sequence model the prefix). All n words are
drawn side by side, one batched forward pass per position. An ensemble (train.ensemble) draws from the mean of its
replicas' probabilities.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from .config import ConfigError
from .data import SPLITS, Vocab

MAX_LEN = 64  # a word that has not ended by then is cut


@torch.no_grad()
def generate(
    model, vocab: Vocab, n: int, seed: int, temperature: float = 1.0, prefix: str = "", replica: int | None = 0
) -> list[str]:
    """n words from `model`'s replica `replica`; None: from the whole model (an ensemble's mean of the replicas'
    probabilities, else replica 0)."""
    if replica is None and not model.ensemble:
        replica = 0
    if temperature <= 0:
        raise ConfigError(f"--temperature must be > 0, got {temperature}")
    unknown = sorted(set(prefix) - set(vocab.stoi))
    if unknown:
        raise ConfigError(f"--prefix has characters the model never saw: {''.join(unknown)!r}")
    g = torch.Generator().manual_seed(seed)
    seq = torch.tensor([[0, *vocab.encode(prefix)]] * n, dtype=torch.long)  # the start token, then the prefix
    out = torch.zeros(n, MAX_LEN, dtype=torch.long)
    alive = torch.ones(n, dtype=torch.bool)
    for t in range(MAX_LEN):
        K = model.replicas
        probs = model.next_char_probs(seq.to(model.device).unsqueeze(0).expand(K, -1, -1), temperature)
        probs = (probs.mean(0) if replica is None else probs[replica]).cpu()
        ix = torch.multinomial(probs, 1, generator=g).squeeze(1)
        ix = torch.where(alive, ix, torch.zeros_like(ix))
        out[:, t] = ix
        alive &= ix != 0
        if not alive.any():
            break
        seq = torch.cat([seq, ix.unsqueeze(1)], 1)
    return [prefix + vocab.decode(row.tolist()) for row in out]


def classify(words: Sequence[str], splits: dict[str, Sequence[str]]) -> list[str]:
    """Where each word occurs in the original data: train, dev, test, or new."""
    sets = {s: set(splits.get(s, ())) for s in SPLITS}
    return [next((s for s in SPLITS if w in sets[s]), "new") for w in words]


def _not_a_sweep(path: Path) -> None:
    """A sweep's dir holds its jobs' run dirs, not a checkpoint: name them (a few) instead of 'no checkpoint'."""
    if not path.is_dir() or (path / "checkpoint.pt").exists():
        return
    jobs = sorted(p.parent for p in path.glob("*/checkpoint.pt"))
    if jobs:
        shown = "  ".join(str(j) for j in jobs[:5]) + (f"  ... ({len(jobs)} in all)" if len(jobs) > 5 else "")
        raise ConfigError(f"{path} is a sweep: sample from one of its jobs' run dirs: {shown}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m makemore.sample", description="Sample words from a trained run's checkpoint.pt."
    )
    parser.add_argument("run_dir", help="a run directory holding checkpoint.pt (or the checkpoint file)")
    parser.add_argument("-n", type=int, default=20, help="how many words (default 20)")
    parser.add_argument("--seed", type=int, default=2147483647 + 10, help="sampling seed (the lecture's)")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature, > 0 (default 1)")
    parser.add_argument("--prefix", default="", help="start every word with these characters")
    parser.add_argument(
        "--replica",
        type=int,
        default=None,
        help="which replica of a train.replicas run (default 0; a train.ensemble run: the whole ensemble)",
    )
    args = parser.parse_args(argv)
    from . import checkpoint
    from .models import from_checkpoint

    try:
        if args.n < 1:
            raise ConfigError(f"-n must be >= 1, got {args.n}")
        _not_a_sweep(Path(args.run_dir))
        state = checkpoint.load(args.run_dir)
        model, vocab = from_checkpoint(state)
        if args.replica is not None and not 0 <= args.replica < model.replicas:
            raise ConfigError(f"--replica must be in 0..{model.replicas - 1}, got {args.replica}")
        words = generate(model, vocab, args.n, args.seed, args.temperature, args.prefix, args.replica)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    where = classify(words, state.get("words", {}))
    width = max(len(w) for w in words)
    for w, s in zip(words, where):
        print(f"{w:<{width}}  {s}")
    print(f"{sum(s == 'new' for s in where)}/{len(words)} new")
    return 0


if __name__ == "__main__":
    sys.exit(main())
