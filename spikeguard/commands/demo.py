"""spikeguard demo: the defenses trained and attacked on the embedded digits, with a report."""

from __future__ import annotations

from pathlib import Path

import typer

from spikeguard.commands.options import QUIET_HELP


def demo(
    out: Path = typer.Option(Path("spikeguard-demo"), "--out", help="New output directory."),
    defenses: str | None = typer.Option(None, help="Comma-separated subset of the demo's defenses."),
    epochs: int | None = typer.Option(None, help="Override the demo's epochs (for a quick look)."),
    seed: int = typer.Option(0),
    n: int | None = typer.Option(None, help="Attack only the first N test images (default: 240 of the 360, "
                                    "to keep the demo under 6 minutes; --n 360 for all)."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Intra-op threads (default: 2, as the "
                                       "README's table was made); the numbers are bit-identical for the same "
                                       "machine, seed and thread count."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="News of each model, epoch and attack "
                                  "on stderr."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
) -> None:
    """Train small SNNs on the embedded digits data with each defense, attack them with the quick suite,
    write a report."""
    from spikeguard.demo import run_demo

    run_demo(out, defenses.split(",") if defenses else None, epochs, seed, progress and not quiet, n=n,
             **({"threads": threads} if threads else {}))

