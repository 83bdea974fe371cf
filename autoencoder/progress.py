"""Progress reporting that suits where the output goes: a tqdm bar on a terminal, plain log lines
otherwise (a log file, CI, a pipe), where a bar's carriage returns would fill the file with noise.

    with progress_bar(total=len(files), desc="predict", unit="img") as progress:
        for batch in batches:
            ...
            progress.update(len(batch))

On a terminal this is a tqdm bar. Elsewhere no bar is drawn and a line
``predict: 1200/10000 img (12%), 85.3 img/s, about 103 s left`` is logged every `every_s` seconds
(and once at the end).
"""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

logger = logging.getLogger("autoencoder.progress")

#: Seconds between two plain progress lines when stderr is not a terminal.
LOG_EVERY_S = 30.0


def on_terminal() -> bool:
    """Whether stderr (where tqdm draws) is an interactive terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


class ProgressBar:
    """A tqdm bar on a terminal, periodic log lines elsewhere; the tqdm calls the toolkit uses
    (``update``, ``close``, ``set_postfix_str``, a context manager) work in both cases."""

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", every_s: float = LOG_EVERY_S,
                 log: logging.Logger | None = None, terminal: bool | None = None, **tqdm_kwargs):
        self.terminal = on_terminal() if terminal is None else terminal
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.log = log or logger
        self.count = 0
        self.started = self.last = time.perf_counter()
        self.closed = False
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=not self.terminal, **tqdm_kwargs)

    def update(self, n: int = 1) -> None:
        self.count += n
        self.bar.update(n)
        if not self.terminal:
            now = time.perf_counter()
            if now - self.last >= self.every_s:
                self.last = now
                self.log.info("%s", self.line())

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.bar.set_postfix_str(text, refresh=refresh)

    def line(self) -> str:
        """``desc: count/total unit (pct), rate unit/s, about N s left``."""
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = self.count / elapsed
        text = f"{self.desc}: {self.count}"
        if self.total:
            text += f"/{self.total} {self.unit} ({100 * self.count / self.total:.0f}%)"
        else:
            text += f" {self.unit}"
        text += f", {rate:.1f} {self.unit}/s"
        if self.total and rate > 0 and self.count < self.total:
            text += f", about {(self.total - self.count) / rate:.0f} s left"
        return text

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.bar.close()
        if not self.terminal and self.count:
            self.log.info("%s", self.line())

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", **kwargs) -> ProgressBar:
    """A :class:`ProgressBar`: tqdm on a terminal, a log line every LOG_EVERY_S seconds elsewhere."""
    return ProgressBar(total=total, desc=desc, unit=unit, **kwargs)
