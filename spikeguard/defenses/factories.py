"""Each defense's factory: the registered target of its name (spikeguard/defenses/registry.py).

A factory takes the checked settings as keywords (``lamb``, ``h``, ``gr_lamb``, ``examples``, the training-attack
generator built from eps/alpha/steps/attack/seed, ``beta``, ``seed``, ``teacher``, ``kd_temperature``,
``kd_alpha``) and uses those it needs."""

from __future__ import annotations

from spikeguard.defenses.objectives import (
    AdversarialExamples,
    AdversarialTraining,
    Defense,
    GradientRegularization,
    RobustAdversarialTraining,
    SparsityGradientRegularization,
    SparsityRegularization,
    SparsityRobustAdversarialTraining,
)

RAT_EPS = 2 / 255  # RAT's published FGSM radius


def vanilla(**settings) -> Defense:
    return Defense()


def adversarial_training(*, examples: AdversarialExamples, **settings) -> Defense:
    return AdversarialTraining(examples)


def robust_adversarial_training(*, beta: float, seed: int, **settings) -> Defense:
    return RobustAdversarialTraining(AdversarialExamples("fgsm", RAT_EPS), beta, seed)


def gradient_regularization(*, lamb: float, **settings) -> Defense:
    return GradientRegularization(lamb)


def sparsity_regularization(*, lamb: float, h: float, **settings) -> Defense:
    return SparsityRegularization(lamb, h)


def adversarial_sparsity_regularization(*, lamb: float, h: float, examples: AdversarialExamples,
                                        **settings) -> Defense:
    return SparsityRegularization(lamb, h, examples)


def sparsity_robust_adversarial_training(*, lamb: float, h: float, beta: float, seed: int, **settings) -> Defense:
    return SparsityRobustAdversarialTraining(lamb, h, AdversarialExamples("fgsm", RAT_EPS), beta, seed)


def sparsity_gradient_regularization(*, lamb: float, h: float, gr_lamb: float, **settings) -> Defense:
    return SparsityGradientRegularization(lamb, h, gr_lamb)


def sparsity_distillation(*, teacher, lamb: float, h: float, kd_temperature: float, kd_alpha: float,
                          **settings) -> Defense:
    from spikeguard.defenses.distillation import SparsityDistillation

    return SparsityDistillation(teacher, lamb, h, kd_temperature, kd_alpha)
