"""Data: the embedded names, the lecture's split, vectorized contexts, arbitrary UTF-8 files, bad files."""

from __future__ import annotations

import random

import pytest
import torch

from makemore import data as data_mod
from makemore.config import ConfigError
from makemore.data import Vocab, build_dataset, embedded_names, load, read_words, split_words


def lecture_build_dataset(words, stoi, block_size):
    """The lecture's own loop, for comparison."""
    X, Y = [], []
    for w in words:
        context = [0] * block_size
        for ch in w + "\0":
            ix = stoi[ch] if ch != "\0" else 0
            X.append(context)
            Y.append(ix)
            context = context[1:] + [ix]
    return torch.tensor(X).view(-1, block_size), torch.tensor(Y)


def test_embedded_names_are_ssa_2017():
    words = embedded_names()
    assert len(words) == 32469
    assert words[:5] == ["emma", "olivia", "ava", "isabella", "sophia"]
    assert "liam" in words and words.index("liam") > words.index("emma")  # female block first
    assert all(w == w.lower() for w in words)


def test_lecture_split_counts_on_names_txt(names_txt):
    ds = load(str(names_txt), [0.8, 0.1, 0.1], 42, 3)
    assert ds.examples() == {"train": 182625, "dev": 22655, "test": 22866}
    assert len(ds.vocab) == 27 and ds.vocab.itos[:3] == [".", "a", "b"]


def test_split_follows_random_shuffle():
    words = [f"w{i}" for i in range(100)]
    ds_words = split_words(words, [0.8, 0.1, 0.1], 7)
    expected = list(words)
    random.seed(7)
    random.shuffle(expected)
    assert (
        ds_words["train"] == expected[:80] and ds_words["dev"] == expected[80:90] and ds_words["test"] == expected[90:]
    )


@pytest.mark.parametrize("block_size", [1, 3, 8])
def test_vectorized_contexts_equal_the_lecture_loop(block_size):
    words = ["emma", "olivia", "a", "xi", "isabella"]
    vocab = Vocab.from_words(words)
    X, Y = build_dataset(words, vocab, block_size)
    Xl, Yl = lecture_build_dataset(words, vocab.stoi, block_size)
    assert torch.equal(X, Xl) and torch.equal(Y, Yl)


def test_any_unicode_and_the_boundary_char(tmp_path):
    p = tmp_path / "w.txt"
    words = ["o'neil", "jean luc", "dr.no", "zoë", "日本", "ana"] * 5
    p.write_text("\n\n".join(words) + "\n\n", encoding="utf-8")  # blank lines are skipped
    assert read_words(str(p)) == words
    ds = load(str(p), [0.6, 0.2, 0.2], 1, 3)
    v = ds.vocab
    assert v.itos[0] == "." and "." in v.stoi and v.stoi["."] != 0  # a data '.' is not the boundary
    assert v.itos[1:] == sorted(set("".join(words)))
    assert v.decode(v.encode("dr.no")) == "dr.no"
    assert sum(ds.examples().values()) == sum(len(w) + 1 for w in words)


@pytest.mark.parametrize(
    "content, needle",
    [
        (None, "no such file"),
        (b"\xff\xfe\xfa bad\n", "not UTF-8"),
        (b"\n  \n\n", "has no words"),
        (b"ab\ncd\n", "too few"),
    ],
)
def test_bad_data_files(tmp_path, content, needle):
    p = tmp_path / "words.txt"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(ConfigError, match=needle) as e:
        load(str(p), [0.8, 0.1, 0.1], 42, 3)
    assert "data.path" in str(e.value) and str(p) in str(e.value)


def test_limit_words_keeps_the_full_vocabulary(names_txt):
    ds = load(str(names_txt), [0.8, 0.1, 0.1], 42, 3, limit_words=5)
    assert len(ds.vocab) == 27 and ds.examples()["train"] == 32


def test_a_leading_byte_order_mark_is_not_a_character(tmp_path):
    words = ["emma", "olivia", "ava", "isabella", "sophia"] * 4
    plain, bom = tmp_path / "plain.txt", tmp_path / "bom.txt"
    plain.write_text("\n".join(words) + "\n", encoding="utf-8")
    bom.write_text("\n".join(words) + "\n", encoding="utf-8-sig")
    assert bom.read_bytes()[:3] == b"\xef\xbb\xbf"
    assert data_mod.read_words(str(bom)) == data_mod.read_words(str(plain)) == words
    a = data_mod.load(str(plain), [0.8, 0.1, 0.1], 42, 3)
    b = data_mod.load(str(bom), [0.8, 0.1, 0.1], 42, 3)
    assert a.vocab.itos == b.vocab.itos and len(b.vocab) == 1 + len(set("".join(words)))
