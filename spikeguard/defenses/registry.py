"""Build a defense by name from the training configuration's fields."""

from __future__ import annotations

import math

import torch

from spikeguard.defenses.objectives import (
    AdversarialExamples,
    AdversarialTraining,
    Defense,
    GradientRegularization,
    RobustAdversarialTraining,
    SparsityRegularization,
)
from spikeguard.errors import UserError

DEFENSES = ("vanilla", "at", "rat", "gr", "sr", "sr_star")
ATTACKS = ("fgsm", "pgd")
RAT_EPS = 2 / 255  # RAT's published FGSM radius


def create_defense(name: str, *, lamb: float = 0.0, h: float = 0.01, eps: float = 8 / 255,
                   alpha: float = 2.55 / 255, steps: int = 7, attack: str = "pgd", beta: float = 0.004,
                   seed: int = 0) -> Defense:
    if name not in DEFENSES:
        raise UserError(f"unknown defense '{name}'; choose from {', '.join(DEFENSES)}")
    check_defense_params(lamb=lamb, h=h, eps=eps, alpha=alpha, steps=steps, attack=attack, beta=beta)
    examples = AdversarialExamples(attack, eps, alpha, steps, torch.Generator().manual_seed(seed))
    if name == "vanilla":
        return Defense()
    if name == "at":
        return AdversarialTraining(examples)
    if name == "rat":
        return RobustAdversarialTraining(AdversarialExamples("fgsm", RAT_EPS), beta, seed)
    if name == "gr":
        return GradientRegularization(lamb)
    if name == "sr":
        return SparsityRegularization(lamb, h)
    return SparsityRegularization(lamb, h, examples)


def check_defense_params(*, lamb, h, eps, alpha, steps, attack, beta) -> None:
    def positive(field, value, allow_zero=False):
        ok = isinstance(value, (int, float)) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
        if not ok:
            raise UserError(f"{field} must be a {'non-negative' if allow_zero else 'positive'} number, got {value}")

    positive("lamb", lamb, allow_zero=True)
    positive("h", h)
    positive("eps", eps, allow_zero=True)
    positive("alpha", alpha)
    positive("beta", beta, allow_zero=True)
    if not isinstance(steps, int) or steps < 1:
        raise UserError(f"steps must be a positive integer, got {steps}")
    if attack not in ATTACKS:
        raise UserError(f"unknown training attack '{attack}'; choose from {', '.join(ATTACKS)}")
