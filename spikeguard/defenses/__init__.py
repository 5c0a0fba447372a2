"""Training objectives: vanilla, AT, RAT, GR, SR and SR*; and the public SR penalty.

Names load on first use (PEP 562), so ``spikeguard.defenses.registry`` (names and rules) needs no PyTorch."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"DEFENSES": "spikeguard.defenses.registry", "create_defense": "spikeguard.defenses.registry",
            "AdversarialExamples": "spikeguard.defenses.objectives", "Defense": "spikeguard.defenses.objectives",
            "sparsity_penalty": "spikeguard.defenses.sparsity",
            "true_class_probability": "spikeguard.defenses.sparsity"}

__all__ = ["DEFENSES", "AdversarialExamples", "Defense", "create_defense", "sparsity_penalty",
           "true_class_probability"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = getattr(importlib.import_module(_EXPORTS[name]), name)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
