"""What a run shows on the console while it trains: a tqdm bar on a terminal, else a log line about every 10% or
30 s."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("makemore")


class Console:
    """A tqdm bar on a terminal; otherwise a plain log line about every 10% or 30 s.

    Speed is training steps per second of step time (evaluation and logging excluded), the same
    figure as metrics.json's steps_per_second. Use it as a context manager: while it is open, log
    lines go through tqdm.write above the bar instead of over it."""

    def __init__(self, total: int, start: int = 0, tty: bool | None = None):
        self.total, self.tty = total, sys.stderr.isatty() if tty is None else tty
        self.bar = None
        self.last_line = time.monotonic()
        self.next_pct = 10
        self._redirect = None
        if self.tty and total:
            from tqdm import tqdm

            # one rate on the bar: the project's steps/s (of step time) in the postfix, not tqdm's wall-clock rate
            fmt = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"
            self.bar = tqdm(total=total, initial=start, dynamic_ncols=True, file=sys.stderr, bar_format=fmt)

    def __enter__(self) -> Console:
        if self.bar is not None:
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._redirect = logging_redirect_tqdm(tqdm_class=type(self.bar))
            self._redirect.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, step: int, loss: float, lr: float, steps_per_second: float) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix_str(f"loss={loss:.4f}, lr={lr:.3g}, {steps_per_second:.0f} steps/s", refresh=False)
            return
        pct = 100 * step / max(self.total, 1)
        if pct >= self.next_pct or time.monotonic() - self.last_line > 30 or step == self.total:
            log.info("step %d/%d  loss %.4f  lr %.3g  %.0f steps/s", step, self.total, loss, lr, steps_per_second)
            self.last_line = time.monotonic()
            while self.next_pct <= pct:
                self.next_pct += 10

    def message(self, text: str) -> None:
        log.info(text)

    def warning(self, text: str) -> None:
        log.warning(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None
