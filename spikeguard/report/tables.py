"""Table helpers the single-run report and the study summary share: how a number is printed, which column
of the paper table an attack belongs to, the order of those columns, and the paper table itself."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from spikeguard.attacks.registry import ATTACKS
from spikeguard.report.blocks import Table
from spikeguard.results import column_label
from spikeguard.schema import AttackResult

ABSENT = "—"  # shown where the inputs hold no such number: never filled in
PAPER_COLUMNS = ("FGSM", "PGD-10", "PGD-30", "PGD-50")
PAPER_SUITE = "paper"    # the published protocol (FGSM and PGD under the four published estimators)
STRONG_SUITE = "strong"  # the full estimator bank, APGD and Square: its worst case can only be lower
EXPLANATIONS = ("per_estimator", "accuracy_is")  # sentences stored beside an attack's numbers; tables say them


def pct(v: float | None) -> str:
    """A fraction in percent with one decimal; ABSENT for None."""
    return ABSENT if v is None else f"{100 * v:.1f}"


def num(v: float | None, fmt: str = ".3g") -> str:
    return ABSENT if v is None else format(v, fmt)


def _typed(attack: AttackResult | dict) -> AttackResult:
    """An attack entry as the schema reads it (callers holding results.json's dict pass that)."""
    return attack if isinstance(attack, AttackResult) else AttackResult.from_json(attack)


def attack_column(attack: AttackResult | dict) -> str | None:
    """The paper-table column an attack entry belongs to: FGSM, PGD-10/30/50, or None (other attacks)."""
    attack = _typed(attack)
    kind = attack.attack.lower()  # the evaluator's attack kind beside a free-form label
    params = dict(attack.params)
    if kind not in ATTACKS:  # a results file without the kind: read it off the label ("pgd-10")
        match = re.fullmatch(r"([a-z]+)[-_]?(\d*)", attack.name.lower())
        kind = match.group(1) if match else ""
        if match and match.group(2):
            params["steps"] = int(match.group(2))
    column = ATTACKS.facts(kind).get("paper_column") if kind in ATTACKS else None
    if params.get("loss", "ce") != "ce":  # the published protocol's PGD ascends the cross-entropy
        return None
    try:
        column = column.format(**params) if column else None
    except (KeyError, IndexError, ValueError):
        return None
    return column if column in PAPER_COLUMNS else None


def table_column(attack: AttackResult) -> str | None:
    """The main table's column of an attack entry: the published protocol's (FGSM, PGD-10/30/50), else the
    attack's name marked cumulative or alone; None for a random baseline (listed under Attacks)."""
    column = attack_column(attack)
    if column:
        return column
    kind = attack.attack.lower()
    if kind in ATTACKS and ATTACKS.facts(kind).get("random"):
        return None
    return column_label(attack)


def column_order(column: str) -> tuple[int, int]:
    """Sort key of an attack column: FGSM, then PGD-k by k, then every other column. The one tie-breaking
    rule: a stable sort keeps the other columns in the order they were first met, which is the suite's."""
    match = re.fullmatch(r"PGD-(\d+)", column)
    return (0, 0) if column == "FGSM" else (1, int(match.group(1))) if match else (2, 0)


def ordered_columns(columns: Iterable[str]) -> list[str]:
    """Each column once, in column_order."""
    return sorted(dict.fromkeys(columns), key=column_order)


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper table, its cells already printed: what names the row (model and suite, or a
    study's cells), clean accuracy, one text per attack column it holds, and its worst cases."""
    lead: list[str]
    clean: str
    columns: dict[str, str]
    worst: list[str]


def paper_table(lead: list[str], rows: list[PaperRow], worst: list[str]) -> Table:
    """The paper-style table: the rows' own columns, clean, every attack column any row holds (ABSENT where a
    row lacks it), then the worst cases. ``lead`` and ``worst`` are those columns' headers."""
    columns = ordered_columns(c for row in rows for c in row.columns)
    body = [[*row.lead, row.clean, *(row.columns.get(c, ABSENT) for c in columns), *row.worst] for row in rows]
    return Table([*lead, "clean", *columns, *worst], body)


def params_text(params: dict) -> str:
    """An attack's parameters for people: "steps 30, alpha 0.319, random start yes"."""
    def value(v) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return f"{v:.3g}"
        if isinstance(v, (list, tuple)):
            return ", ".join(map(value, v))
        return str(v)

    parts = [f"{k.replace('_', ' ')} {value(v)}" for k, v in params.items() if k not in EXPLANATIONS and v is not None]
    return ", ".join(parts) or ABSENT
