"""Property-based tests (hypothesis): any word list gives a consistent vocabulary, split and examples; any override
of the knobs gives a config or one line naming what is wrong, never a traceback."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from makemore import api
from makemore.config import ConfigError, validate
from makemore.data import BOUNDARY, SPLITS, load
from makemore.hydra_app import check_known_keys, hydra_error

# a word: any characters but the line break and the boundary mark, not blank (data.read_words' rules)
WORD = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r" + BOUNDARY), min_size=1)
WORDS = st.lists(WORD.filter(lambda w: w.strip() and w == w.strip("\r\n")), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=WORDS, block_size=st.integers(1, 6), layout=st.sampled_from(["context", "sequence"]))
def test_any_word_list_gives_consistent_data(tmp_path, words, block_size, layout):
    path = tmp_path / "words.txt"
    path.write_text("\n".join(words) + "\n", encoding="utf-8")
    try:
        d = load(str(path), [0.8, 0.1, 0.1], 42, block_size, layout=layout)
    except ConfigError as e:  # too few words for three splits: one line naming the file
        assert "\n" not in str(e) and str(path) in str(e)
        return
    assert d.vocab.itos[0] == BOUNDARY and d.vocab.itos[1:] == sorted(set("".join(words)))
    assert sorted(w for s in SPLITS for w in d.words[s]) == sorted(words)  # every word in exactly one split
    V = len(d.vocab.itos)
    for s in SPLITS:
        targets = [d.vocab.stoi[c] for w in d.words[s] for c in w]
        assert d.examples()[s] == sum(len(w) + 1 for w in d.words[s])  # each character and each end mark
        Y = d.Y[s][d.Y[s] >= 0]
        assert Y.numel() == d.examples()[s] and (Y.numel() == 0 or int(Y.max()) < V)
        assert int((Y > 0).sum()) == len(targets)  # the characters; the rest are end marks
        if layout == "context":
            assert d.X[s].shape == (d.examples()[s], block_size) and (d.X[s].numel() == 0 or int(d.X[s].max()) < V)


KNOBS = {
    "model.hidden": st.integers(-3, 400),
    "model.emb": st.integers(-2, 64),
    "model.block_size": st.integers(-1, 12),
    "model.norm": st.sampled_from(["none", "batch", "layer", "group"]),
    "train.steps": st.integers(-5, 10**6),
    "train.batch_size": st.integers(-2, 512),
    "train.eval_every": st.integers(-2, 1000) | st.none(),
    "schedule.lrs": st.lists(st.floats(-1, 2, allow_nan=False), max_size=3),
    "optimizer.weight_decay": st.floats(-1, 2, allow_nan=False),
    "device.threads": st.integers(-2, 8),
}
VALUE = st.one_of(st.integers(-10, 10), st.floats(allow_nan=True), st.text(max_size=6), st.booleans())


def _override(key: str, value) -> str:
    if value is None:
        return f"{key}=null"
    if isinstance(value, list):
        return f"{key}=[{','.join(repr(v) for v in value)}]"
    if isinstance(value, str):
        return f"{key}='{value}'" if value.isprintable() and "'" not in value and "\\" not in value else f"{key}=x"
    return f"{key}={value}"


@pytest.mark.slow  # each example composes through Hydra (~0.3 s)
@settings(max_examples=60, deadline=None)
@given(
    chosen=st.lists(st.sampled_from(sorted(KNOBS)), unique=True, max_size=4).flatmap(
        lambda keys: st.tuples(*(st.tuples(st.just(k), KNOBS[k] | VALUE) for k in keys))
    )
)
def test_any_override_gives_a_config_or_one_line(chosen):
    overrides = [_override(k, v) for k, v in chosen]
    try:
        cfg = api.compose(overrides)
        check_known_keys(cfg)
        validate(cfg)
    except ConfigError as e:
        assert str(e) and "\n" not in str(e), overrides
    except Exception as e:  # Hydra's or OmegaConf's: the CLI prints hydra_error's one line
        line = hydra_error(e)
        assert line is not None, (overrides, repr(e))  # None would mean a traceback
        assert "\n" not in line, overrides


@pytest.mark.parametrize("override", ["model.hidden=abc", "model.hiden=3", "experiment=lecutre", "train.steps=-1"])
def test_the_examples_the_properties_stand_for(override):
    with pytest.raises(Exception) as info:
        cfg = api.compose([override])
        check_known_keys(cfg)
        validate(cfg)
    e = info.value
    line = str(e) if isinstance(e, ConfigError) else hydra_error(e)
    assert line and "\n" not in line
