"""White-box attacks in [0, 1] pixel space, and the estimator ensemble that takes the per-sample worst case.

This layer sits below ``defenses``: adversarial training makes its examples with the same code that
evaluation attacks with.
"""

from spikeguard.attacks.ensemble import EnsembleResult, worst_case_accuracy
from spikeguard.attacks.gradient import eval_mode, fgsm, input_gradient, pgd

__all__ = ["EnsembleResult", "eval_mode", "fgsm", "input_gradient", "pgd", "worst_case_accuracy"]
