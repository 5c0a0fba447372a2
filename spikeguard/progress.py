"""What long commands tell their user while they work, on stderr.

On a terminal, evaluation shows a live rich bar counting (attack, estimator, batch) units, naming the unit
that runs now, with elapsed time and an estimate of the time left. Anywhere else (a log file, nohup, CI,
``| tee``) the same news comes as plain lines, one per finished attack on a batch, so a log grows while the
work goes on. Training prints one line per epoch in both cases. ``Reporter(enabled=False)`` (``--quiet``)
says nothing.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Reporter:
    """Progress news for one command. ``stream`` defaults to stderr; ``live`` (default: whether the stream
    is a terminal) chooses the rich bar over plain lines."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None, live: bool | None = None):
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self._bar: Progress | None = None
        self._task = None
        self._total = 0
        self._done = 0
        self._start = 0.0
        self._title = ""

    # ---- one-off lines

    def line(self, text: str) -> None:
        """A line of news (above the bar when one is live)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    # ---- counted units (evaluation)

    def begin(self, title: str, total: int) -> None:
        """Start counting ``total`` units of work called ``title``."""
        self._total, self._done, self._start, self._title = total, 0, time.perf_counter(), title
        if not self.enabled:
            return
        if self.live:
            # counts and times first, the unit's name last: a narrow terminal cuts the name, not the numbers
            self._bar = Progress(BarColumn(bar_width=16), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("left"), TimeRemainingColumn(), TextColumn("{task.description}"),
                                 console=Console(file=self.stream), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(title, total=total)
        self.line(f"{title}: {total} units (attack x estimator x batch)")

    def unit(self, name: str) -> None:
        """The unit ``name`` starts now."""
        if self._bar is not None:
            self._bar.update(self._task, description=name)

    def advance(self, units: int = 1) -> None:
        """``units`` units are done."""
        self._done += units
        if self._bar is not None:
            self._bar.update(self._task, advance=units)

    def step_done(self, what: str, seconds: float) -> None:
        """A larger step (one attack on one batch) finished: a plain line when no bar is live."""
        if not self.enabled or self._bar is not None:
            return
        elapsed = time.perf_counter() - self._start
        left = elapsed / self._done * (self._total - self._done) if self._done else 0.0
        self.line(f"  {what} done in {seconds:.1f}s; {self._done}/{self._total} units, elapsed "
                  f"{_clock(elapsed)}, about {_clock(left)} left")

    def end(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self.enabled and self._total:
            self.line(f"{self._title}: done in {_clock(time.perf_counter() - self._start)}")
        self._total = 0


def reporter_for(progress) -> Reporter:
    """A Reporter from a bool (True: news on stderr) or a Reporter already made."""
    return progress if isinstance(progress, Reporter) else Reporter(enabled=bool(progress))
