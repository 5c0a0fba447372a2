"""Results are data: JSON written atomically, and a rich table for the terminal."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_text(path: str | Path, text: str) -> None:
    """Write via a temporary file and a rename, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def print_table(rows: dict[str, dict[str, float]], title: str) -> None:
    """One row per model, one column per accuracy (fractions, printed in percent)."""
    table = Table(title=title)
    columns = list(dict.fromkeys(c for r in rows.values() for c in r))
    table.add_column("model")
    for column in columns:
        table.add_column(column, justify="right")
    for name, r in rows.items():
        table.add_row(name, *(f"{100 * r[c]:.1f}" if c in r else "-" for c in columns))
    # rich assumes 80 columns when output is not a terminal, which truncates attack names in logs
    Console(width=shutil.get_terminal_size((160, 24)).columns).print(table)
