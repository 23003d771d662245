"""Shell completion: Hydra's bash completion through the makemore-run executable (pyproject's [project.scripts])."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXE = Path(sys.executable).with_name("makemore-run")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not EXE.exists(), reason="makemore-run not installed (pip install -e . puts it beside python)"),
]


def _complete(line: str, tmp_path: Path) -> list[str]:
    env = {**os.environ, "COMP_LINE": line, "COMP_POINT": str(len(line))}
    r = subprocess.run([str(EXE), "-sc", "query=bash"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_completes_keys_and_options(tmp_path):
    assert "model.hidden=" in _complete("makemore-run model.hi", tmp_path)
    presets = _complete("makemore-run experiment=", tmp_path)
    assert {"experiment=lecture", "experiment=wavenet"} <= set(presets)
    assert "model=transformer" in _complete("makemore-run model=tr", tmp_path)


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_script_installs_and_completes(tmp_path):
    script = (
        'eval "$(makemore-run -sc install=bash)"; COMP_LINE="makemore-run model.emb"; COMP_POINT=${#COMP_LINE}; '
        'COMP_WORDS=(makemore-run model.emb); COMP_CWORD=1; hydra_bash_completion; echo "${COMPREPLY[@]}"'
    )
    env = {**os.environ, "PATH": f"{EXE.parent}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run(["bash", "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert r.stdout.split() == ["model.emb="], r.stderr
