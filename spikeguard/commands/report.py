"""spikeguard report: a report of runs, evaluations and analyses, or a study's summary."""

from __future__ import annotations

from pathlib import Path

import typer

from spikeguard.errors import UserError


def report(
    inputs: list[Path] = typer.Argument(..., help="results.json files, run directories and/or analysis "
                                        "directories; or one study directory."),
    out: Path | None = typer.Option(None, "--out", help="The report file to write (markdown, or HTML with "
                                       "--html). A study directory's report goes to DIR/summary.md and .html."),
    html: bool = typer.Option(False, "--html/--markdown", help="Self-contained HTML with embedded figures."),
) -> None:
    """A verdict per model and a comparison chart, then tables (clean and the attacks the suites ran,
    ensembles), flags, theory measurements, figures and configs. For a study: means and 95% intervals over
    seeds, the paper-style table, FGSM/PGD with and without SR, trade-offs across lambda."""
    from spikeguard.study.state import is_study

    if len(inputs) == 1 and is_study(inputs[0]):
        if out is not None:
            raise UserError(f"'{inputs[0]}' is a study: its report is written to {inputs[0]}/summary.md and "
                            "summary.html; drop --out")
        from spikeguard.study.summary import write_summary

        markdown, page = write_summary(inputs[0])
        typer.echo(f"wrote {markdown} and {page}")
        return
    if out is None:
        raise UserError("report needs --out REPORT.md (only a study directory has a place of its own)")
    from spikeguard.report import write_report

    path = write_report(inputs, out, html=html)
    typer.echo(f"wrote {path}")

