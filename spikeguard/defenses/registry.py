"""Defense registry, readable without PyTorch: each defense's name, its rules and its factory.

Facts of every defense:

* ``needs_lamb``: it refuses lamb = 0 (lamb weighs its penalty);
* ``penalised``: its penalty must not be identically zero over an epoch (else the run trains as vanilla);
* ``makes_examples``: it trains on adversarial examples it generates;
* ``refuses_bf16``, ``refuses_compile``, ``refuses_sync_bn``: None, or why it cannot run with that option;
* ``settings``: the defense-specific training fields it reads (of DEFENSE_SETTINGS; config.yaml records only
  these), or None for all of them;
* ``combines``: the registered defenses it combines (SR* is SR with AT), for comparisons with each part;
* ``description``: one line.

The factory ("spikeguard.defenses.factories:...") builds the objective; :func:`create_defense` checks the
settings and calls it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from spikeguard.errors import UserError
from spikeguard.registry import Registry

if TYPE_CHECKING:
    from spikeguard.defenses.objectives import Defense

DEFENSES = Registry("defense")
ATTACKS = ("fgsm", "pgd")  # the adversarial-example generators AT and SR* train with
# training fields only some defenses read (eps is not among them: it is also the evaluation's default radius)
DEFENSE_SETTINGS = ("lamb", "h", "alpha", "steps", "attack", "beta", "gr_lamb", "teacher", "kd_temperature", "kd_alpha")
_EXAMPLES = ("alpha", "steps", "attack")

_FACTORIES = "spikeguard.defenses.factories"
_NO_SR_BF16 = "bf16 rounds the currents as much as the SR finite-difference step moves them"


def register_defense(name: str, target, *, description: str, needs_lamb: bool = False, penalised: bool = False,
                     makes_examples: bool = False, refuses_bf16: str | None = None,
                     refuses_compile: str | None = None, refuses_sync_bn: str | None = None,
                     settings: tuple[str, ...] | None = None, combines: tuple[str, ...] = ()):
    """Register a defense with every fact set (so ``DEFENSES.get(name).refuses_bf16`` always reads)."""
    if settings is not None and set(settings) - set(DEFENSE_SETTINGS):
        raise ValueError(f"settings must be among {', '.join(DEFENSE_SETTINGS)}, got {settings}")
    return DEFENSES.register(name, target, description=description, needs_lamb=needs_lamb, penalised=penalised,
                             makes_examples=makes_examples, refuses_bf16=refuses_bf16,
                             refuses_compile=refuses_compile, refuses_sync_bn=refuses_sync_bn,
                             settings=None if settings is None else tuple(settings), combines=tuple(combines))


register_defense("vanilla", f"{_FACTORIES}:vanilla", settings=(), description="cross-entropy on clean inputs")
register_defense("at", f"{_FACTORIES}:adversarial_training", makes_examples=True, settings=_EXAMPLES,
                 description="adversarial training: cross-entropy on FGSM or PGD examples (Madry et al.)")
register_defense("rat", f"{_FACTORIES}:robust_adversarial_training", makes_examples=True, settings=("beta",),
                 description="FGSM training at 2/255 plus an orthogonality retraction after each step")
register_defense("gr", f"{_FACTORIES}:gradient_regularization", needs_lamb=True, penalised=True, settings=("lamb",),
                 description="gradient regularisation: + lamb ||d CE / d x||^2 by double backprop",
                 # aot_autograd graphs and SyncBatchNorm's backward kernels have no double backward
                 refuses_compile="compiled graphs have no double backward",
                 refuses_sync_bn="SyncBatchNorm's backward cannot be differentiated again, which GR's double "
                                 "backprop needs")
register_defense("sr", f"{_FACTORIES}:sparsity_regularization", needs_lamb=True, penalised=True,
                 settings=("lamb", "h"),
                 refuses_bf16=_NO_SR_BF16,
                 description="sparsity regularisation: + lamb x the finite-difference SR penalty (step h)")
register_defense("sr_star", f"{_FACTORIES}:adversarial_sparsity_regularization", needs_lamb=True,
                 penalised=True, makes_examples=True, refuses_bf16=_NO_SR_BF16, settings=("lamb", "h", *_EXAMPLES),
                 combines=("sr", "at"), description="SR computed on adversarial examples")
# SR combined with the other baselines (docs/findings.md, question 2): SR's lamb weighs the SR penalty in both
register_defense("sr_rat", f"{_FACTORIES}:sparsity_robust_adversarial_training", needs_lamb=True, penalised=True,
                 makes_examples=True, refuses_bf16=_NO_SR_BF16, settings=("lamb", "h", "beta"), combines=("sr", "rat"),
                 description="SR computed on RAT's FGSM examples, plus RAT's orthogonality retraction after each step")
register_defense("sr_gr", f"{_FACTORIES}:sparsity_gradient_regularization", needs_lamb=True, penalised=True,
                 settings=("lamb", "h", "gr_lamb"), refuses_bf16=_NO_SR_BF16, combines=("sr", "gr"),
                 refuses_compile="compiled graphs have no double backward",
                 refuses_sync_bn="SyncBatchNorm's backward cannot be differentiated again, which GR's double "
                                 "backprop needs",
                 description="cross-entropy + lamb x the SR penalty + gr_lamb ||d CE / d x||^2")
# A distilled SR student (question 2): a single model taught by an SR model or ensemble (spikeguard/defenses/
# distillation.py), compared with SR alone (distillation alone is no defense of the paper's).
register_defense("sr_distill", f"{_FACTORIES}:sparsity_distillation", needs_lamb=True, penalised=True,
                 settings=("lamb", "h", "teacher", "kd_temperature", "kd_alpha"), refuses_bf16=_NO_SR_BF16,
                 combines=("sr",),
                 description="a student matching a frozen teacher's softened logits (weight kd_alpha, temperature "
                             "kd_temperature) + lamb x the SR penalty")


def create_defense(name: str, *, lamb: float = 0.0, h: float = 0.01, eps: float = 8 / 255,
                   alpha: float = 2.55 / 255, steps: int = 7, attack: str = "pgd", beta: float = 0.004,
                   gr_lamb: float = 0.0, seed: int = 0, teacher=None, kd_temperature: float = 4.0,
                   kd_alpha: float = 0.9) -> Defense:
    """The named objective; ``teacher`` (a frozen nn.Module, see distillation.load_teacher) for sr_distill."""
    entry = DEFENSES.get(name)
    check_defense_params(lamb=lamb, h=h, eps=eps, alpha=alpha, steps=steps, attack=attack, beta=beta)
    if "gr_lamb" in (entry.settings or ()) and not (isinstance(gr_lamb, (int, float)) and math.isfinite(gr_lamb)
                                                   and gr_lamb > 0):
        raise UserError(f"defense '{name}' needs a positive gr_lamb (the GR penalty's weight), got {gr_lamb}")
    if "teacher" in (entry.settings or ()):
        if teacher is None:
            raise UserError(f"defense '{name}' needs a teacher: one or more checkpoints (or run directories) "
                            "whose logits the student learns from")
        check_distillation_params(kd_temperature, kd_alpha)
    import torch

    from spikeguard.defenses.objectives import AdversarialExamples

    examples = AdversarialExamples(attack, eps, alpha, steps, torch.Generator().manual_seed(seed))
    return entry.load()(lamb=lamb, h=h, examples=examples, beta=beta, gr_lamb=gr_lamb, seed=seed, teacher=teacher,
                        kd_temperature=kd_temperature, kd_alpha=kd_alpha)


def check_distillation_params(kd_temperature, kd_alpha) -> None:
    if not (isinstance(kd_temperature, (int, float)) and math.isfinite(kd_temperature) and kd_temperature > 0):
        raise UserError(f"kd_temperature must be a positive number, got {kd_temperature}")
    if not (isinstance(kd_alpha, (int, float)) and 0 <= kd_alpha <= 1):
        raise UserError(f"kd_alpha must lie in [0, 1], got {kd_alpha}")


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
