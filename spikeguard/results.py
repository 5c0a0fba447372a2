"""A rich table of results for the terminal (results files are written by spikeguard.files)."""

from __future__ import annotations

import shutil

from rich.console import Console
from rich.table import Table


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


def column_label(attack: dict) -> str:
    """An attack's column header that says what its accuracy counts: alone (every clean-correct sample
    attacked) or cumulative (only the survivors of the earlier attacks attacked)."""
    params = attack.get("params") or {}
    return f"{attack['name']} ({'cumulative' if params.get('survivors_only') else 'alone'})"


def headline(record: dict) -> dict | None:
    """The results' headline, when the file has one (older files do not)."""
    value = record.get("headline")
    return value if isinstance(value, dict) and "accuracy" in value else None


def headline_text(record: dict) -> str | None:
    """The headline in one line; a number that is not a bound says so and why. None without a headline."""
    found = headline(record)
    if found is None:
        return None
    text = f"headline {100 * found['accuracy']:.1f}%: {found.get('label') or ('bound' if found.get('is_bound') else 'not a bound')}"
    if not found.get("is_bound", True):
        why = "; ".join(found.get("why") or []) or "no reason recorded"
        text += f" ({why})"
        if found.get("tried"):
            text += f"; tried: {', '.join(found['tried'])}"
    return text
