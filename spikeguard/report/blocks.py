"""The document a report is made of, as typed blocks: what sections.py and the study summary build and
render.py writes as markdown or HTML. A block says what it is, never how it looks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Items:
    """A bulleted list."""
    items: list[str]


@dataclass(frozen=True)
class Code:
    """Preformatted text (a config, a plan)."""
    text: str


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Figure:
    """A PNG already written to ``path``."""
    path: Path
    caption: str


@dataclass(frozen=True)
class Fold:
    """A titled section: folded away in HTML until opened, unless ``folded`` is False (the verdict)."""
    title: str
    blocks: list[Block] = field(default_factory=list)
    folded: bool = True


Block = Heading | Paragraph | Items | Code | Table | Figure | Fold
