"""What several commands share: help text built from the registries, and the flags a user left out."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from spikeguard.defenses.registry import DEFENSES

QUIET_HELP = "No progress news on stderr (--no-progress says the same)."


def choices(names: Iterable[str]) -> str:
    return " | ".join(names)


def defenses_with(fact: str) -> str:
    """The defenses whose ``fact`` is set, as "a, b and c"."""
    names = [n for n in DEFENSES if DEFENSES.facts(n)[fact]]
    return " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else "".join(names)


def given(**flags: Any) -> dict[str, Any]:
    """The flags the user gave: those whose value is not None (None: take the config's value)."""
    return {k: v for k, v in flags.items() if v is not None}
