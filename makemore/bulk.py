"""Large word files in C (data.c, built by native.py): the lecture's split and contexts with the numbers data.py's
Python and numpy give, in a fraction of their time. A Python loop over millions of words or characters takes
seconds: random.shuffle's, the vocabulary's, the contexts'. bench/scale.py times both on 2M words.

Used for the context layout of files over THRESHOLD words with no data.limit_words; each split's word list is
gathered only when asked for (a checkpoint, the samples' classification)."""

from __future__ import annotations

import ctypes
import functools
import operator
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

THRESHOLD = 100_000  # words: below it Python's own loops take well under a second
SPLITS = ("train", "dev", "test")


@functools.cache
def _native():
    """data.c's functions, or None (no compiler): then data.py builds the data in Python."""
    from .native import library

    P, I64 = ctypes.c_void_p, ctypes.c_int64
    signatures = {
        "lecture_shuffle": [P, ctypes.c_int, P, I64],
        "build_contexts": [P, I64, P, I64, I64, P, P],
        "build_split_contexts": [P, P, P, I64, P, P, I64, I64, P, P],
    }
    lib = library(Path(__file__).with_name("data.c"), signatures, "data.c", "the data are built in Python")
    if lib is not None:
        lib.build_contexts.restype = lib.build_split_contexts.restype = I64
    return lib


def applies(words: Sequence[str], layout: str, block_size: int, limit_words: int | None) -> bool:
    return (
        len(words) > THRESHOLD and layout == "context" and block_size <= 256 and limit_words is None and bool(_native())
    )


def lecture_order(n: int, seed: int) -> np.ndarray:
    """The permutation random.seed(seed); random.shuffle(x) applies to a list of n items, bit for bit."""
    random.seed(seed)
    _, state, _ = random.getstate()  # what random.shuffle would draw from, and data.c's copy of it draws instead
    mt = np.array(state[:624], dtype=np.uint32)
    order = np.arange(n, dtype=np.int64)
    _native().lecture_shuffle(mt.ctypes.data, state[624], order.ctypes.data, n)
    return order


class SplitWords(Mapping):
    """Each split's words, gathered from all the words in the split's order when first asked for."""

    def __init__(self, words: Sequence[str], parts: dict[str, np.ndarray]):
        self._words, self._parts, self._lists = words, parts, {}

    def __getitem__(self, split: str) -> list[str]:
        if split not in self._lists:
            order = self._parts[split].tolist()
            self._lists[split] = (
                list(operator.itemgetter(*order)(self._words)) if len(order) > 1 else [self._words[i] for i in order]
            )
        return self._lists[split]

    def count(self, split: str) -> int:
        """How many words the split has, without gathering them."""
        return len(self._parts[split])

    def __iter__(self) -> Iterator[str]:
        return iter(self._parts)

    def __len__(self) -> int:
        return len(self._parts)


def load(words: Sequence[str], splits: Sequence[float], seed: int, block_size: int):
    """data.load's vocabulary, split words and contexts of a large list of words: (vocab, words, X, Y)."""
    from .data import Vocab

    sep = ord("\n")  # read_words splits lines, so no word holds one
    points = np.frombuffer(("\n".join(words) + "\n").encode("utf-32-le"), dtype=np.uint32)
    counts = np.bincount(points)
    counts[sep] = 0
    chars = np.flatnonzero(counts)  # the vocabulary's code points, in order
    vocab = Vocab([chr(c) for c in chars])
    lut = np.full(len(counts), -1, dtype=np.int64)  # code point -> index; the separator is the end mark, 0
    lut[chars], lut[sep] = np.arange(1, len(chars) + 1), 0
    starts = np.concatenate([[0], np.flatnonzero(points == sep) + 1])  # word w: points[starts[w]:starts[w + 1]]
    order = lecture_order(len(words), seed)
    n1, n2 = int(splits[0] * len(words)), int((splits[0] + splits[1]) * len(words))
    parts = {"train": order[:n1], "dev": order[n1:n2], "test": order[n2:]}
    X, Y = {}, {}
    lib = _native()
    for s, part in parts.items():
        sizes = starts[part + 1] - starts[part]  # targets of each word: its chars and its end mark
        out = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if len(part) else np.zeros(0, dtype=np.int64)
        n = int(sizes.sum())
        X[s], Y[s] = torch.empty(n, block_size, dtype=torch.long), torch.empty(n, dtype=torch.long)
        lib.build_split_contexts(points.ctypes.data, starts.ctypes.data, part.ctypes.data, len(part),
                                 out.ctypes.data, lut.ctypes.data, len(lut), block_size, X[s].data_ptr(),
                                 Y[s].data_ptr())  # fmt: skip
    return vocab, SplitWords(words, parts), X, Y
