"""A rich table of results for the terminal (results files are written by spikeguard.files)."""

from __future__ import annotations

import shutil

from rich.console import Console
from rich.table import Table

from spikeguard.schema import AttackResult, Headline


def terminal_console() -> Console:
    """A console as wide as the terminal; rich assumes 80 columns when output is not a terminal, which would
    narrow logs, so a log gets 160."""
    return Console(width=shutil.get_terminal_size((160, 24)).columns)


def longest_word(texts) -> int:
    """The widest whitespace-separated word among ``texts``: a column this wide wraps, never cuts."""
    return max((len(word) for text in texts for word in str(text).split()), default=1)


def print_table(rows: dict[str, dict[str, float]], title: str, console: Console | None = None) -> None:
    """One row per model, one column per accuracy (fractions, printed in percent). A table wider than the
    console is not squeezed until rich cuts names ("rando..."): each column is made as narrow as its longest
    word (headers and model names wrap at spaces) and the columns that still do not fit go into further
    tables, each repeating the model column."""
    console = console or terminal_console()
    columns = list(dict.fromkeys(c for r in rows.values() for c in r))
    cells = {c: [f"{100 * r[c]:.1f}" if c in r else "-" for r in rows.values()] for c in columns}
    natural = max(map(len, ["model", *rows])) + 4 + sum(max(map(len, [c, *cells[c]])) + 3 for c in columns)
    if natural <= console.width:
        _print_part(console, title, rows, cells, columns, narrow=False)
        return
    model_width = longest_word(["model", *rows])
    chunks: list[list[str]] = [[]]
    room, used = console.width - model_width - 4, 0  # the model column with its padding and outer borders
    for column in columns:
        width = longest_word([column, *cells[column]]) + 3  # padding and a border
        if chunks[-1] and used + width > room:
            chunks.append([])
            used = 0
        chunks[-1].append(column)
        used += width
    for part, chunk in enumerate(chunks):
        _print_part(console, title if part == 0 else f"{title} (continued)", rows, cells, chunk, narrow=True)


def _print_part(console: Console, title: str, rows: dict, cells: dict[str, list[str]], columns: list[str],
                narrow: bool) -> None:
    def width(texts) -> dict:
        size = longest_word(texts)
        return {"min_width": size, "max_width": size} if narrow else {}

    table = Table(title=title)
    table.add_column("model", overflow="fold", **width(["model", *rows]))
    for column in columns:
        table.add_column(column, justify="right", overflow="fold", **width([column, *cells[column]]))
    for i, name in enumerate(rows):
        table.add_row(name, *(cells[c][i] for c in columns))
    console.print(table)


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
