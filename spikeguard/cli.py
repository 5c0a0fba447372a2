"""The command line: one typer app over the commands of spikeguard.commands, and the one place where an
error a user can cause becomes one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys

import typer

from spikeguard.commands.analyze import analyze
from spikeguard.commands.demo import demo
from spikeguard.commands.evaluate import evaluate
from spikeguard.commands.import_release import import_checkpoint
from spikeguard.commands.report import report
from spikeguard.commands.study import study
from spikeguard.commands.train import train
from spikeguard.errors import UserError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"show_default": True},  # --help shows every default
                  help="Train adversarially robust spiking neural networks and evaluate them honestly.")
for command in (train, evaluate, demo, analyze, report, study):  # in this order in --help
    app.command()(command)
app.command(name="import")(import_checkpoint)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        argv = ["--help"]
    try:
        code = app(args=argv, prog_name="spikeguard", standalone_mode=False)
        if isinstance(code, int) and code:  # a command's typer.Exit(code)
            return code
    except UserError as e:  # one line even when a message quotes a path or value holding a line break
        message = str(e).replace("\r", "\\r").replace("\n", "\\n")
        print(f"error: {message}", file=sys.stderr)
        return 2
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 130
    except typer.TyperException as e:  # bad flag, missing argument, bad value: click's usage errors
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        print(f"error: {' '.join(message.split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


def entry_point() -> None:
    sys.exit(main())
