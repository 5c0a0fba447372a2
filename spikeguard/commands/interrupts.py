"""Ctrl-C and SIGTERM on a long command: one line on stderr saying what was kept and the exact command
that resumes, then exit 130 (Ctrl-C) or 143 (SIGTERM), the shell's codes for those signals.

Without it SIGTERM ends the process silently (Python's default) and Ctrl-C ends in click's bare "Aborted".
"""

from __future__ import annotations

import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer

CTRL_C_EXIT, SIGTERM_EXIT = 130, 143  # 128 + the signal's number


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like KeyboardInterrupt (a BaseException, so no `except Exception` swallows
    it and every `finally` and lock release runs)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second TERM ends the process at once
    raise Terminated()


def command_line(*words: object) -> str:
    """``spikeguard WORDS...`` quoted for a POSIX shell."""
    return shlex.join(["spikeguard", *(str(w) for w in words)])


def this_command(ctx: typer.Context, *, add: tuple[str, ...] = ()) -> str:
    """The running command as the user could type it again: its arguments and every option that differs
    from its default (rebuilt from the parsed values, so it holds whether argv came from a shell or from
    ``cli.main``), then ``add``."""
    words: list[object] = [ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if param.param_type_name == "argument":
            words += [] if value is None else [value]
        elif param.param_type_name == "option" and value != param.default and value is not None:
            flag_name = param.opts[0]
            if getattr(param, "is_flag", False):
                flag_name = flag_name if value else (param.secondary_opts or [""])[0]
                words += [flag_name] if flag_name and flag_name not in add else []
            elif flag_name not in add:
                words += [flag_name, value]
    return command_line(*words, *add)


@contextmanager
def resumable(what: str, kept: Callable[[], str], resume: Callable[[], str]) -> Iterator[None]:
    """Run the block; on Ctrl-C or SIGTERM print "WHAT interrupted (Ctrl-C): KEPT; RESUME" and exit 130 or
    143. ``kept`` and ``resume`` (e.g. "resume with: spikeguard ...") are asked only then (what is on disk at
    that moment)."""
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: signals stay as they are
        previous = None
    try:
        yield
    except (KeyboardInterrupt, Terminated) as e:
        how, code = (("SIGTERM", SIGTERM_EXIT) if isinstance(e, Terminated) else ("Ctrl-C", CTRL_C_EXIT))
        fresh_line = "\n" if code == CTRL_C_EXIT and sys.stderr.isatty() else ""  # off the terminal's "^C"
        print(f"{fresh_line}{what} interrupted ({how}): {kept()}; {resume()}", file=sys.stderr)
        raise typer.Exit(code) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
