"""spikeguard import: a published checkpoint turned into a spikeguard checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer

from spikeguard.errors import UserError


def import_checkpoint(
    source: Path = typer.Argument(..., help="The published .pth file (a state dict)."),
    fmt: str = typer.Option(..., "--format", help="The file's origin: sr-release (the SR paper's authors)."),
    model: str = typer.Option(..., "--model", help="vgg11 | wrn16_4"),
    dataset: str = typer.Option(..., "--dataset", help="cifar10 | cifar100"),
    out: Path = typer.Option(..., "--out", help="The spikeguard checkpoint to write (CKPT.pt)."),
) -> None:
    """Turn a published checkpoint into a spikeguard checkpoint that evaluate, analyze and report accept."""
    if fmt != "sr-release":
        raise UserError(f"unknown --format '{fmt}'; choose from sr-release")
    from spikeguard.release import SELECTION, import_release

    path = import_release(source, model, dataset, out)
    typer.echo(f"wrote {path} ({model}, {dataset}); note: {SELECTION}")

