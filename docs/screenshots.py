"""Rebuild the README's pictures of TensorBoard (docs/img/tensorboard_*.png) and optuna-dashboard
(docs/img/optuna_dashboard.png) from the project's own commands.

    pip install -e ".[docs,dashboard]" # playwright (the Python package; it drives the system's Chromium)
    apt-get install chromium           # or any Chromium/Chrome: --browser PATH
    python docs/screenshots.py [--data names.txt] [--steps 20000] [--only tensorboard|dashboard]

TensorBoard: it trains the README's 2x2 grid (`python -m makemore.run -m model.emb=2,10 model.hidden=100,300
...`) in a scratch dir, serves it with `tensorboard --logdir <sweep dir>` on 127.0.0.1 and takes headless
screenshots of the landing tab (Time Series), Custom Scalars and HParams, as a user's first look at them.
Diagnostics (--only health): two runs of the lecture's config, `model.init=lecture` and `model.init=scaled`, served
together; Time Series filtered to the saturated share, and to the weights' update ratios
(docs/img/health_saturation.png, docs/img/health_update_ratio.png).
Ensembles (--only ensemble): experiment=best_ensemble for 6,000 steps; Time Series filtered to the dev losses, the
ensemble's beside its members' (docs/img/ensemble_dev.png).
optuna-dashboard: it runs a short search (`python -m makemore.run hparams_search=optuna
hydra.sweeper.n_trials=16 train.steps=3000 hydra.sweeper.min_resource=300 ...`), serves its study with
`optuna-dashboard <sweep dir>/optuna.journal` and shoots the study's page.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"
PAGES = {
    "tensorboard_landing.png": "/",
    "tensorboard_custom_scalars.png": "/#custom_scalars",
    "tensorboard_hparams.png": "/#hparams",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = ROOT.parent / "shared" / "data" / "names.txt"
    p.add_argument(
        "--data",
        default=str(names) if names.is_file() else None,
        help="word file (default: names.txt in ../shared if present, else the embedded names)",
    )
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--browser", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    p.add_argument("--out", default=str(IMG))
    p.add_argument(
        "--only", choices=("tensorboard", "dashboard", "health", "ensemble"), help="make only these pictures"
    )
    p.add_argument("--search-steps", type=int, default=3000, help="steps per trial of the dashboard's search")
    args = p.parse_args()
    if not args.browser:
        print("error: no Chromium found: apt-get install chromium, or pass --browser PATH", file=sys.stderr)
        return 2
    if args.only in (None, "tensorboard"):
        tensorboard_shots(args)
    if args.only in (None, "dashboard"):
        dashboard_shot(args)
    if args.only in (None, "health"):
        health_shots(args)
    if args.only in (None, "ensemble"):
        ensemble_shot(args)
    return 0


FLAGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


def wait_for(url: str, seconds: float = 60) -> None:
    for _ in range(int(seconds * 2)):
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)


def serve_tensorboard(logdir: Path) -> tuple[subprocess.Popen, str]:
    """`tensorboard --logdir logdir` on a free port of 127.0.0.1, once it answers: (its process, its URL)."""
    port = free_port()
    tb = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    wait_for(base)
    time.sleep(3)  # the first load of the logdir
    return tb, base


def tensorboard_shots(args) -> None:
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="makemore-shots-"))
    cmd = [
        sys.executable,
        "-m",
        "makemore.run",
        "-m",
        "model.emb=2,10",
        "model.hidden=100,300",
        f"train.steps={args.steps}",
    ] + ([f"data.path={Path(args.data).resolve()}"] if args.data else [])
    print("$", " ".join(cmd[1:]))
    subprocess.run(cmd, cwd=work, check=True)
    (sweep,) = (work / "outputs" / "multirun").iterdir()
    tb, base = serve_tensorboard(sweep)
    try:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.browser, args=FLAGS)
            for name, path in PAGES.items():
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(base + path, wait_until="networkidle")
                time.sleep(6)  # charts draw in a worker after the data arrive
                page.screenshot(path=str(out / name))
                page.close()
                print("wrote", out / name)
            browser.close()
    finally:
        tb.terminate()
        tb.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def health_shots(args) -> None:
    """The lecture's init beside the scaled init, in train_health/: the saturated share and the update ratios."""

    work = Path(tempfile.mkdtemp(prefix="makemore-shots-"))
    data = [f"data.path={Path(args.data).resolve()}"] if args.data else []
    for init in ("lecture", "scaled"):
        cmd = [sys.executable, "-m", "makemore.run", f"model.init={init}", "train.steps=5000", "samples=0", *data]
        print("$", " ".join(cmd[1:]))
        subprocess.run(cmd, cwd=work, check=True)
    shoot_time_series(work / "outputs" / "runs", Path(args.out), args.browser, {
        "saturated": "health_saturation.png",
        "update_ratio/W": "health_update_ratio.png",  # the weights' update/data ratios (log10; the lecture's guide: -3)
    })  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)


def ensemble_shot(args) -> None:
    """experiment=best_ensemble, briefly: the ensemble's dev loss beside its members' mean, in Time Series."""
    work = Path(tempfile.mkdtemp(prefix="makemore-shots-"))
    data = [f"data.path={Path(args.data).resolve()}"] if args.data else []
    cmd = [sys.executable, "-m", "makemore.run", "experiment=best_ensemble", "train.steps=6000", "train.eval_every=500"]
    cmd += ["samples=0", *data]
    print("$", " ".join(cmd[1:]))
    subprocess.run(cmd, cwd=work, check=True)
    shots = {"^loss/dev(_members)?$": "ensemble_dev.png"}  # the ensemble's dev loss, its members' mean
    shoot_time_series(work / "outputs" / "runs", Path(args.out), args.browser, shots)
    shutil.rmtree(work, ignore_errors=True)


def shoot_time_series(logdir: Path, out: Path, browser_path: str, shots: dict[str, str]) -> None:
    """TensorBoard on `logdir`; Time Series with its tag filter (a regex) set to each key of `shots`, shot into
    out / the key's file name."""
    from playwright.sync_api import sync_playwright

    tb, base = serve_tensorboard(logdir)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=browser_path, args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(base + "/#timeseries", wait_until="networkidle")
            tags = page.locator('input[placeholder^="Filter tags"]').first
            for regex, name in shots.items():
                tags.fill(regex)
                page.keyboard.press("Escape")  # the filter's suggestions
                time.sleep(6)  # charts draw in a worker after the data arrive
                page.screenshot(path=str(out / name))
                print("wrote", out / name)
            browser.close()
    finally:
        tb.terminate()
        tb.wait(10)


def dashboard_shot(args) -> None:
    """A short search with pruning (its min_resource scaled to the short trials), its study in optuna-dashboard."""
    import json

    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="makemore-shots-"))
    cmd = [
        sys.executable,
        "-m",
        "makemore.run",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=16",
        f"train.steps={args.search_steps}",
        f"hydra.sweeper.min_resource={args.search_steps // 10}",
        "samples=0",
    ] + ([f"data.path={Path(args.data).resolve()}"] if args.data else [])
    print("$", " ".join(cmd[1:]))
    subprocess.run(cmd, cwd=work, check=True)
    journal = work / "outputs" / "search" / "makemore" / "optuna.journal"
    port = free_port()
    exe = Path(sys.executable).with_name("optuna-dashboard")
    print("$ optuna-dashboard", journal.relative_to(work))
    server = subprocess.Popen(
        [str(exe), str(journal), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(base + "/api/studies")
        with urllib.request.urlopen(base + "/api/studies", timeout=10) as r:
            (study,) = json.loads(r.read())["study_summaries"]
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.browser, args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1350})  # history, importance, timeline
            page.goto(f"{base}/dashboard/studies/{study['study_id']}", wait_until="networkidle")
            time.sleep(6)  # the plots draw after the data arrive
            page.screenshot(path=str(out / "optuna_dashboard.png"))
            browser.close()
        print("wrote", out / "optuna_dashboard.png")
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
