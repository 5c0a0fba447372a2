"""`spikeguard report` for results files, run directories and analyses: collect, build, render, write."""

from __future__ import annotations

from pathlib import Path

from spikeguard.errors import UserError
from spikeguard.files import write_text
from spikeguard.report.collect import collect
from spikeguard.report.render import render_html, render_markdown
from spikeguard.report.sections import build_document


def write_report(inputs: list[Path], out: Path, html: bool = False) -> Path:
    """Write the report for ``inputs`` (results.json files, run directories, analysis directories) to
    ``out``; figures go to ``<out stem>_figures/`` beside it (linked from markdown, embedded in HTML)."""
    out = Path(out)
    if out.exists() and out.is_dir():
        raise UserError(f"output '{out}' is a directory; give a file name such as report.md")
    collected = collect([Path(p) for p in inputs])
    blocks = build_document(collected, out.parent / f"{out.stem}_figures")
    write_text(out, render_html(blocks) if html else render_markdown(blocks, out.parent))
    return out
