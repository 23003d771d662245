"""Rebuild the README's TensorBoard pictures (docs/img/tensorboard_*.png) from the project's own commands.

    pip install -e ".[docs]"           # playwright (the Python package; it drives the system's Chromium)
    apt-get install chromium           # or any Chromium/Chrome: --browser PATH
    python docs/screenshots.py [--data ../shared/data/names.txt] [--steps 20000]

It trains the README's 2x2 grid (`python -m makemore.run -m model.emb=2,10 model.hidden=100,300 ...`) in a
scratch dir, serves it with `tensorboard --logdir <sweep dir>` on 127.0.0.1 and takes headless screenshots of
the landing tab (Time Series), Custom Scalars and HParams, as a user's first look at them.
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
    args = p.parse_args()
    if not args.browser:
        print("error: no Chromium found: apt-get install chromium, or pass --browser PATH", file=sys.stderr)
        return 2
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
    port = free_port()
    tb = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(sweep), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(60):
            try:
                urllib.request.urlopen(base, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        time.sleep(3)  # the first load of the logdir
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        flags = [
            "--no-sandbox",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--no-first-run",
        ]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.browser, args=flags)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
