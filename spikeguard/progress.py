"""What long commands tell their user while they work, on stderr: every progress bar and progress line of
the package comes from here, drawn with one library (rich).

On a terminal, evaluation shows a live bar counting (attack, estimator, batch) units, naming the unit that
runs now, with the time elapsed and an estimate of the time remaining. Anywhere else (a log file, nohup, CI,
``| tee``) the same news comes as plain lines, one per finished attack on a batch, so a log grows while the
work goes on. Training prints one line per epoch in both cases, and on a terminal a bar of the epoch's steps
(:meth:`Reporter.counting`; converting CIFAR10-DVS recordings to frames shows one too). Times read
"elapsed 0:01:02, remaining 0:03:10" everywhere; "remaining" extrapolates the pace so far over the work
left, each evaluation unit weighted by its attack's work (``unit_work`` in spikeguard/attacks/registry.py),
not counted alike: a strong suite's 25 FGSM units take seconds in all, each of its 4 APGD-T units minutes.
``Reporter(enabled=False)`` (``--quiet``) says nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.table import Column
from rich.text import Text


def clock(seconds: float | None) -> str:
    """A duration as H:MM:SS; "-:--:--" when it is not known yet."""
    if seconds is None:
        return "-:--:--"
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def remaining_time(elapsed: float, done: float, total: float) -> float | None:
    """The time ``total - done`` more work takes at the pace so far; None before any is done."""
    return elapsed / done * (total - done) if done > 0 else None


def times(elapsed: float, remaining: float | None) -> str:
    """The time a piece of work took so far and the estimate of what it still needs, labelled as such."""
    return f"elapsed {clock(elapsed)}, remaining {clock(remaining)}"


class _TimesColumn(ProgressColumn):
    """A live bar's times, in the words of the plain lines."""

    def render(self, task: Task) -> Text:
        done, total = task.fields.get("work", (task.completed, task.total or 0.0))
        elapsed = task.elapsed or 0.0
        return Text(times(elapsed, remaining_time(elapsed, done, total)))


class Reporter:
    """Progress news for one command. ``stream`` defaults to stderr; ``live`` (default: whether the stream
    is a terminal) chooses the rich bar over plain lines."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None, live: bool | None = None):
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._total = 0
        self._done = 0
        self._work = (0.0, 0.0)  # the units' weighted work: done, total
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

    def begin(self, title: str, total: int, work: float | None = None) -> None:
        """Start counting ``total`` units of work called ``title``; ``work``: their summed weights (each
        :meth:`advance` then says its units' weight), by default one per unit."""
        self._total, self._done, self._start, self._title = total, 0, time.perf_counter(), title
        self._work = (0.0, float(total if work is None else work))
        if not self.enabled:
            return
        if self.live:
            bar, task = self._start_bar(title, total)
            bar.update(task, work=self._work)
        self.line(f"{title}: {total} units (attack x estimator x batch)")

    def unit(self, name: str) -> None:
        """The unit ``name`` starts now."""
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, description=name)

    def advance(self, units: int = 1, work: float | None = None) -> None:
        """``units`` units are done, of weight ``work`` (by default one each)."""
        self._done += units
        self._work = (self._work[0] + (units if work is None else work), self._work[1])
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=units, work=self._work)

    def step_done(self, what: str, seconds: float) -> None:
        """A larger step (one attack on one batch) finished: a plain line when no bar is live."""
        if not self.enabled or self._bar is not None:
            return
        elapsed = time.perf_counter() - self._start
        remaining = remaining_time(elapsed, *self._work)
        self.line(f"  {what} done in {seconds:.1f}s; {self._done}/{self._total} units, "
                  f"{times(elapsed, remaining)}")

    def end(self) -> None:
        self._stop_bar()
        if self.enabled and self._total:
            self.line(f"{self._title}: done in {clock(time.perf_counter() - self._start)}")
        self._total = 0

    # ---- a bar for the steps of one block (a training epoch, a data conversion)

    @contextmanager
    def counting(self, title: str, total: int, done: int = 0) -> Iterator[Callable[[], None]]:
        """A live bar of ``total`` steps (``done`` of them already) while the block runs; the block calls
        what it is given once per finished step. A terminal only: in a log the block's own lines (an epoch's
        line) are the news, so there it draws nothing, as when disabled or inside another bar."""
        if not (self.enabled and self.live and self._bar is None):
            yield lambda: None
            return
        bar, task = self._start_bar(title, total, done)
        try:
            yield lambda: bar.update(task, advance=1)
        finally:
            self._stop_bar()

    def _start_bar(self, title: str, total: int, done: int = 0) -> tuple[Progress, TaskID]:
        # counts and times first, the unit's name last: a narrow terminal cuts the name, not the numbers
        bar = Progress(BarColumn(bar_width=16), MofNCompleteColumn(), _TimesColumn(Column(no_wrap=True)),
                       TextColumn("{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis")),
                       console=Console(file=self.stream), transient=True)
        bar.start()
        self._bar, self._task = bar, bar.add_task(title, total=total, completed=done)
        return bar, self._task

    def _stop_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar, self._task = None, None


def reporter_for(progress) -> Reporter:
    """A Reporter from a bool (True: news on stderr) or a Reporter already made."""
    return progress if isinstance(progress, Reporter) else Reporter(enabled=bool(progress))
