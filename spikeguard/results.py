"""A rich table of results for the terminal (results files are written by spikeguard.files)."""

from __future__ import annotations

import shutil

from rich.console import Console
from rich.table import Table

from spikeguard.schema import AttackResult, Headline


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


def column_label(attack: AttackResult | dict) -> str:
    """An attack's column header that says what its accuracy counts: alone (every clean-correct sample
    attacked) or cumulative (only the survivors of the earlier attacks attacked)."""
    attack = attack if isinstance(attack, AttackResult) else AttackResult.from_json(attack)
    return f"{attack.name} ({'cumulative' if attack.cumulative else 'alone'})"


def headline_text(found: Headline | None) -> str | None:
    """A headline in one line; a number that is not a bound says so and why. None without a headline."""
    if found is None:
        return None
    text = f"headline {100 * found.accuracy:.1f}%: {found.label}"
    if not found.is_bound:
        text += f" ({'; '.join(found.why) or 'no reason recorded'})"
        if found.tried:
            text += f"; tried: {', '.join(found.tried)}"
    return text
