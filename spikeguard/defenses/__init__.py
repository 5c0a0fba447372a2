"""Training objectives: vanilla, AT, RAT, GR, SR and SR*; and the public SR penalty.

Names load on first use (PEP 562), so ``spikeguard.defenses.registry`` (names and rules) needs no PyTorch."""

from __future__ import annotations

from spikeguard.registry import lazy_exports

_EXPORTS = {"DEFENSES": "spikeguard.defenses.registry", "create_defense": "spikeguard.defenses.registry",
            "AdversarialExamples": "spikeguard.defenses.objectives", "Defense": "spikeguard.defenses.objectives",
            "sparsity_penalty": "spikeguard.defenses.sparsity",
            "true_class_probability": "spikeguard.defenses.sparsity"}

__all__ = ["DEFENSES", "AdversarialExamples", "Defense", "create_defense", "sparsity_penalty",
           "true_class_probability"]


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
