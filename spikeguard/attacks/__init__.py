"""Attacks in [0, 1] pixel space: white-box FGSM, R-FGSM and PGD, AutoAttack's attacks behind a thin
adapter, random perturbations, sparse event edits, BPDA through the ANN twin, and the per-sample worst
case over an ensemble. ``registry.py`` names every attack kind with its facts; every kind a suite may name
is also an attack object in the torchattacks convention (``PGD(model, eps=8/255)(x, y)``, objects.py),
its class made from the registry on first use, for a kind registered later too.

This layer sits below ``defenses``: adversarial training makes its examples with the same code that
evaluation attacks with. The public names load on first use, so the registry's facts need no PyTorch.
"""

from __future__ import annotations

from spikeguard.attacks.registry import attack_class_names  # facts only: no PyTorch
from spikeguard.registry import lazy_exports

_PUBLIC = {
    "EnsembleResult": "spikeguard.attacks.ensemble",
    "WorstCase": "spikeguard.attacks.ensemble",
    "worst_case_accuracy": "spikeguard.attacks.ensemble",
    "fgsm": "spikeguard.attacks.gradient",
    "input_gradient": "spikeguard.attacks.gradient",
    "pgd": "spikeguard.attacks.gradient",
    "rfgsm": "spikeguard.attacks.gradient",
    "Attack": "spikeguard.attacks.objects",
    "attack_class": "spikeguard.attacks.objects",
    "AttackCall": "spikeguard.attacks.registry",
    "register_attack": "spikeguard.attacks.registry",
}

__all__ = sorted([*_PUBLIC, *attack_class_names()])  # and the attack class of any kind registered later

_module_getattr, _module_dir = lazy_exports(globals(), _PUBLIC)


def __getattr__(name: str):
    kind = attack_class_names().get(name)
    if kind is not None:  # made afresh when the kind was registered again
        from spikeguard.attacks.objects import attack_class

        return attack_class(kind)
    return _module_getattr(name)


def __dir__() -> list[str]:
    return sorted(set(_module_dir()) | set(attack_class_names()))
