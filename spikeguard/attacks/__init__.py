"""Attacks in [0, 1] pixel space: white-box FGSM, R-FGSM and PGD (here), AutoAttack's attacks behind a thin
adapter, random perturbations, BPDA through the ANN twin, and the estimator ensemble.

This layer sits below ``defenses``: adversarial training makes its examples with the same code that
evaluation attacks with.
"""

from spikeguard.attacks.ensemble import EnsembleResult, worst_case_accuracy
from spikeguard.attacks.gradient import fgsm, input_gradient, pgd, rfgsm

__all__ = ["EnsembleResult", "fgsm", "input_gradient", "pgd", "rfgsm", "worst_case_accuracy"]
