"""Attacks in [0, 1] pixel space: white-box FGSM, R-FGSM and PGD, AutoAttack's attacks behind a thin
adapter, random perturbations, sparse event edits, BPDA through the ANN twin, and the per-sample worst
case over an ensemble. ``registry.py`` names every attack kind with its facts.

This layer sits below ``defenses``: adversarial training makes its examples with the same code that
evaluation attacks with. The public names load on first use, so the registry's facts need no PyTorch.
"""

from __future__ import annotations

from spikeguard.registry import lazy_exports

_PUBLIC = {
    "EnsembleResult": "spikeguard.attacks.ensemble",
    "WorstCase": "spikeguard.attacks.ensemble",
    "worst_case_accuracy": "spikeguard.attacks.ensemble",
    "fgsm": "spikeguard.attacks.gradient",
    "input_gradient": "spikeguard.attacks.gradient",
    "pgd": "spikeguard.attacks.gradient",
    "rfgsm": "spikeguard.attacks.gradient",
    "AttackCall": "spikeguard.attacks.registry",
    "register_attack": "spikeguard.attacks.registry",
}

__all__ = sorted(_PUBLIC)


__getattr__, __dir__ = lazy_exports(globals(), _PUBLIC)
