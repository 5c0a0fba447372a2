"""The per-sample rows: one SampleOutcome per sample, and the CSV beside results.json, whose "label|member"
columns appear nowhere else."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spikeguard.errors import UserError
from spikeguard.files import write_text

_SEP = "|"  # "label|member" in the CSV's column names
_BY, _MEAN = "broken_by", "mean"
CSV_FIRST = ["index", "label", "clean_correct", "robust", "broken_by"]


@dataclass
class AttackOutcome:
    """One attack on one sample: its worst case over its members (score), the member that reached it, each
    member's score (cumulative within a cascade), and a random attack's mean over its draws."""

    score: float | None = None
    broken_by: str = ""
    members: dict[str, float] = field(default_factory=dict)
    mean: float | None = None


@dataclass
class SampleOutcome:
    """One per-sample row. Scores are the fraction of draws classified correctly (0 or 1 when deterministic)."""

    index: int
    label: int
    clean_correct: float
    zero_gradient: list[str] = field(default_factory=list)  # members with an exactly zero input gradient
    attacks: dict[str, AttackOutcome] = field(default_factory=dict)  # by attack label, in suite order
    robust: float | None = None   # the worst case over every attack (None until the attacks are combined)
    broken_by: str = ""           # "attack/member" that reached it first, "clean" when clean-wrong, else ""

    def attack(self, label: str) -> AttackOutcome:
        """The outcome of attack ``label``, started empty when it has none yet."""
        return self.attacks.setdefault(label, AttackOutcome())

    def score(self, label: str) -> float:
        """Attack ``label``'s worst-case score (every attack run on the sample has one)."""
        value = self.attacks[label].score
        if value is None:
            raise ValueError(f"sample {self.index} has no score for attack {label}")
        return value

    @property
    def worst_case(self) -> float:
        """``robust``, once the attacks are combined (evaluation.summary.finish_rows)."""
        if self.robust is None:
            raise ValueError(f"sample {self.index}: the attacks are not combined yet")
        return self.robust

    def to_row(self, lists: bool = False) -> dict:
        """The flat row of the CSV ("label", "label|member", "label|broken_by", "label|mean" columns); with
        ``lists`` zero_gradient stays a list (JSON), else it is space-joined (the CSV's cell)."""
        row: dict[str, Any] = {"index": self.index, "label": self.label, "clean_correct": self.clean_correct,
                               "zero_gradient": list(self.zero_gradient) if lists else " ".join(self.zero_gradient)}
        for label, outcome in self.attacks.items():
            if outcome.mean is not None:
                row[label + _SEP + _MEAN] = outcome.mean
            row.update({label + _SEP + member: value for member, value in outcome.members.items()})
            row[label] = outcome.score
            row[label + _SEP + _BY] = outcome.broken_by
        if self.robust is not None:
            row["robust"], row["broken_by"] = self.robust, self.broken_by
        return row

    @classmethod
    def from_row(cls, row: dict) -> SampleOutcome:
        """A row of to_row (or of the CSV as read: numbers parsed, zero_gradient a string or a list)."""
        zero = row.get("zero_gradient") or []
        sample = cls(int(row["index"]), int(row["label"]), float(row["clean_correct"]),
                     zero.split() if isinstance(zero, str) else list(zero),
                     robust=None if row.get("robust") is None else float(row["robust"]),
                     broken_by=row.get("broken_by") or "")
        for key, value in row.items():
            if key in CSV_FIRST or key == "zero_gradient":
                continue
            label, _, member = key.partition(_SEP)
            outcome = sample.attack(label)
            if not member:
                outcome.score = float(value)
            elif member == _BY:
                outcome.broken_by = value or ""
            elif member == _MEAN:
                outcome.mean = float(value)
            else:
                outcome.members[member] = float(value)
        return sample


def write_samples(path: Path, samples: list[SampleOutcome]) -> None:
    """The per-sample CSV: CSV_FIRST, then every other column in row order; floats to 6 digits."""
    rows = [s.to_row() for s in samples]
    columns = CSV_FIRST + [k for k in (rows[0] if rows else {}) if k not in CSV_FIRST]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(path, buffer.getvalue())


def read_samples(path: Path) -> list[SampleOutcome]:
    """The rows write_samples wrote (every version's CSV has this layout); UserError in one line for a
    missing or malformed file."""
    try:
        with open(path, newline="") as f:
            samples = [SampleOutcome.from_row(_parsed(row)) for row in csv.DictReader(f)]
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise UserError(f"per-sample file '{path}' cannot be read ({type(e).__name__}: {str(e)[:100]})") from None
    if not samples:
        raise UserError(f"per-sample file '{path}' holds no rows")
    return samples


def _parsed(row: dict) -> dict:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key is None:
            raise ValueError("a row has more cells than the header")
        if key in ("index", "label"):
            out[key] = int(value)
        elif key in ("broken_by", "zero_gradient") or key.endswith(_SEP + _BY):
            out[key] = value or ""
        else:
            out[key] = float(value)
    return out
