"""What the console shows (results/console.py, the sweep labels of hydra_app.py): the progress bar on a terminal,
log lines that do not break it, and each sweep job's lines labelled with its number."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_sweep_console_names_its_dir_and_labels_each_jobs_lines(grid_2x2):
    sweep, r = grid_2x2
    out = r.stdout + r.stderr
    assert out.count(f"run dir: {sweep.resolve()}\n") == 2  # the sweep dir, at its start and end
    for n in range(4):
        assert re.search(rf"\[#{n}\]\[INFO\] run dir: {re.escape(str(sweep))}/model\.emb-", out), n
    assert "\x1b[" not in out


@pytest.mark.slow
def test_log_lines_do_not_break_the_progress_bar(tmp_path, words_file):
    """On a terminal (a pty), each evaluation line starts on a line of its own, not after the bar."""
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 120-column terminal
    env = dict(os.environ, PYTHONWARNINGS="ignore", COLUMNS="120")
    # steps slow enough (~0.1 ms each) for tqdm to draw its bar between evaluations
    args = ("model.hidden=400", "model.emb=10", "train.steps=6000", "train.eval_every=1000", "samples=0")
    p = subprocess.Popen(
        [sys.executable, "-m", "makemore.run", *args, f"data.path={words_file}"],
        cwd=tmp_path,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            b = os.read(master, 4096)
        except OSError:
            break
        if not b:
            break
        chunks.append(b)
    assert p.wait(240) == 0
    os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    evals = [line for line in text.split("\n") if re.search(r"step \d000: train", line)]
    assert len(evals) == 6 and "%|" in text, text[-2000:]  # the bar was drawn
    for line in evals:
        visible = line.rstrip("\r").split("\r")[
            -1
        ]  # what is left on screen after carriage returns (a pty ends lines with \r\n)
        assert visible.startswith("["), repr(line)


def test_the_bar_shows_one_rate(capsys):
    """tqdm's own wall-clock rate (it/s, step/s) is left out: the bar's one rate is the run's steps/s."""
    from makemore.results.console import Console

    with Console(1000, tty=True) as c:
        c.update(500, 2.1234, 0.1, 6139.0)
        c.bar.refresh()
    err = capsys.readouterr().err
    assert "500/1000" in err and "loss=2.1234, lr=0.1, 6139 steps/s" in err
    assert "it/s" not in err and "step/s" not in err.replace("steps/s", "")
