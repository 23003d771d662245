"""Small C helpers, built for this machine with the system's C compiler (`cc`, or $CC) on first use, cached in
~/.cache/makemore (or $XDG_CACHE_HOME/makemore) once per source, compiler and CPU, and called through ctypes.
`library` returns None where one cannot be built or loaded (no compiler, no OpenMP: e.g. Apple's clang); its caller
then runs plain torch or Python that gives the same results."""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import re
import subprocess
import tempfile
from pathlib import Path

FLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC")

log = logging.getLogger(__name__)


def _cpu() -> str:
    """What -march=native depends on: a cache directory shared between machines (a cluster's home) must not
    hand one machine's build to another."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return platform.machine() + platform.processor()


def _texts(source: Path) -> list[str]:
    """The source and the project's headers it includes (#include "..."): a header's change rebuilds it too."""
    text = source.read_text()
    headers = re.findall(r'#include "([^"]+)"', text)
    return [text, *(t for h in headers for t in _texts((source.parent / h).resolve()))]


def _build(cc: str, source: Path) -> Path:
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256("\0".join([*_texts(source), *FLAGS, cc, version, _cpu()]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "makemore"
    path = cache / f"{source.stem}-{key}.so"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:  # built aside, then renamed: parallel jobs may race
            out = Path(tmp) / path.name
            subprocess.run([cc, *FLAGS, "-o", str(out), str(source), "-lm"], capture_output=True, text=True, check=True)
            os.replace(out, path)
    return path


def library(source: Path, signatures: dict[str, list], what: str, otherwise: str) -> ctypes.CDLL | None:
    """The built library of `source` with its functions' argument types set, or None after one warning line
    naming why (`what` failed, and `otherwise` what runs instead)."""
    cc = os.environ.get("CC") or "cc"
    try:
        path = _build(cc, source)
        lib = ctypes.CDLL(str(path))
    except subprocess.CalledProcessError as e:
        why = (e.stderr or "").strip().splitlines()
        log.warning("%s: %s failed (%s); %s", what, cc, why[0] if why else e, otherwise)
        return None
    except OSError as e:  # no compiler, an unwritable cache, a library that does not load
        log.warning("%s: %s; %s", what, e, otherwise)
        return None
    for name, args in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, None
    log.debug("%s: %s", what, path)
    return lib
