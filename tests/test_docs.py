"""The docs cannot drift from the code: the generated configuration reference is current, every
`python -m makemore.…` command of the README and docs/ composes (or parses), and the notebook runs."""

from __future__ import annotations

import os
import re
import shlex
import time
from pathlib import Path

import pytest

from makemore import reference

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"python -m (makemore\.[a-z_]+)((?: [^`#|\n]*)?)")
PLACEHOLDER = {
    "<run dir>": "RUN",
    "<run>": "RUN",
    "<name>": "RUN",
    "<sweep dir>": "SWEEP",
    "<sweep>": "SWEEP",
    "<that sweep>": "SWEEP",
}


def test_the_configuration_reference_is_generated_from_the_schema():
    page = ROOT / "docs" / "configuration-reference.md"
    assert page.read_text() == reference.render(), f"stale: run `{reference.COMMAND}`"


def commands() -> list[tuple[str, str, list[str]]]:
    """(page, module, arguments) of every `python -m makemore.X ...` in the README and docs/."""
    out = []
    for page in PAGES:
        for line in page.read_text().splitlines():
            for module, rest in COMMAND.findall(line):
                for text, sub in PLACEHOLDER.items():
                    rest = rest.replace(text, sub)
                rest = re.sub(r"\[--[^\]]*\]", "", rest).replace("...", "").replace("…", "").strip()
                out.append((page.name, module, shlex.split(rest)))
    return out


def first_job(args: list[str]) -> list[str]:
    """The overrides of a multirun's first job (`-m a=1,2 b=x` -> `a=1 b=x`), through Hydra's own sweep parser."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in args if a not in ("-m", "--multirun", "--cfg", "job")]
    parsed = OverridesParser.create().parse_overrides(args)
    plain = [str(o.input_line) for o in parsed if not (o.is_sweep_override() and o.value_type.name != "CHOICE_SWEEP"
             and "(" in str(o.input_line))]  # fmt: skip
    return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(plain), None)[0][0]


def test_the_pages_hold_commands():
    found = commands()
    assert len(found) > 40 and {m for _, m, _ in found} >= {"makemore.run", "makemore.sample", "makemore.report"}


@pytest.mark.slow
def test_every_documented_command_composes():
    """A renamed key or preset breaks this test, not a user: each run/lr_find command's first job composes through
    Hydra's compose API (conf/, the presets, the sweeper and launcher groups) and passes the range checks."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from makemore.config import validate
    from makemore.hydra_app import CONF, register_configs, register_resolvers

    register_configs()
    register_resolvers()
    failures = []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for page, module, args in commands():
            if module not in ("makemore.run", "makemore.lr_find"):
                continue
            try:
                # resume=PATH becomes the recorded command line of that dir (resume.command_line), which a
                # placeholder has not: the command's other overrides are checked
                overrides = [o for o in first_job(args) if not o.startswith("resume=") or o in ("resume=true",)]
                cfg = compose("config", overrides=overrides, return_hydra_config=any(o.startswith("hydra") for o in
                              overrides))  # fmt: skip
                OmegaConf.set_struct(cfg, False)
                cfg.pop("hydra", None)
                validate(cfg)
            except Exception as e:  # noqa: BLE001 - every failing command is reported, not just the first
                failures.append(f"{page}: python -m {module} {' '.join(args)}: {type(e).__name__}: {e}")
    assert not failures, "\n".join(failures)


def test_every_documented_tool_command_parses():
    """makemore.sample and makemore.report: their arguments parse with the command's own argparse parser."""
    import argparse

    from makemore import report, sample

    for page, module, args in commands():
        if module not in ("makemore.sample", "makemore.report") or not args:  # no arguments: a mention in prose
            continue
        mod = {"makemore.sample": sample, "makemore.report": report}[module]
        seen = {}
        original = argparse.ArgumentParser.parse_args

        def stop(self, *a, _seen=seen, _original=original, **k):
            _seen["args"] = _original(self, *a, **k)
            raise SystemExit(0)

        argparse.ArgumentParser.parse_args = stop
        try:
            with pytest.raises(SystemExit) as exit_info:
                mod.main(args)
        finally:
            argparse.ArgumentParser.parse_args = original
        assert exit_info.value.code == 0 and "args" in seen, f"{page}: python -m {module} {' '.join(args)}"


def test_the_api_sets_the_clis_threads():
    import torch

    from makemore import api

    run = api.setup(api.compose(["train.steps=10", "data.limit_words=200"]))
    assert torch.get_num_threads() == run.train_threads == 1  # the lecture's small step: one thread, as the CLI


@pytest.mark.slow
def test_the_notebook_runs(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    monkeypatch.setenv("MAKEMORE_NB_STEPS", "200")
    monkeypatch.setenv("MAKEMORE_NB_WORDS", "2000")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(ROOT / "notebooks" / "makemore_part2.ipynb", as_version=4)
    started = time.perf_counter()
    NotebookClient(nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the curves and the embedding map, inline
    assert time.perf_counter() - started < 60
