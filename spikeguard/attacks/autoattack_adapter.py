"""Thin adapters over AutoAttack's own implementation (the ``pyautoattack`` package by its authors):
APGD-CE, APGD-T (DLR), FAB-T, Square and standard AutoAttack.

Each adapter maps (model, x, y) in [0, 1] pixel space to adversarial examples. The library reseeds the
global RNG inside its attacks, so every call runs in a forked RNG with a seed drawn from the caller's
generator: the caller's random state is untouched and results are reproducible. Targeted attacks use
min(9, classes - 1) target classes, the number the data set actually allows (never a fixed 10 classes).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

import torch
from torch import nn

from spikeguard.errors import UserError
from spikeguard.runtime import forked_rng

NORMS = {"linf": "Linf", "l2": "L2"}


def _library():
    try:
        from pyautoattack import AutoAttack
        from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
        from pyautoattack.fab_pt import FABAttack_PT
        from pyautoattack.square import SquareAttack
    except ImportError as e:  # a dependency of spikeguard, so this means a broken install
        raise UserError(f"AutoAttack's implementation could not be imported ({e}); pip install pyautoattack==0.2.0") from None
    return AutoAttack, APGDAttack, APGDAttack_targeted, FABAttack_PT, SquareAttack


@contextlib.contextmanager
def _seeded(generator: torch.Generator | None, device: torch.device) -> Iterator[int]:
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    quiet = io.StringIO()  # the library prints and logs its own progress and warnings
    logger = logging.getLogger("auto-attack")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with forked_rng(device), contextlib.redirect_stdout(quiet), \
                contextlib.redirect_stderr(quiet), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield seed
    finally:
        logger.setLevel(level)


def target_classes(num_classes: int) -> int:
    if num_classes < 4:  # the DLR loss reads the 1st, 3rd and 4th largest logits
        raise UserError(f"targeted APGD/FAB need at least 4 classes, the model has {num_classes}")
    return min(9, num_classes - 1)


def _norm(norm: str) -> str:
    if norm not in NORMS:
        raise UserError(f"unknown norm '{norm}'; choose from {', '.join(NORMS)}")
    return NORMS[norm]


def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, num_classes: int, loss: str = "ce",
         steps: int = 100, restarts: int = 1, norm: str = "linf", draws: int = 1,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """APGD on the cross-entropy (``loss="ce"``) or untargeted DLR (``"dlr"``); ``draws`` > 1 is the
    library's EoT (gradients averaged over draws). For a stochastic model the library's own success test
    (one draw) is unreliable, so every sample is attacked and its highest-loss point returned."""
    _, APGDAttack, *_ = _library()
    with _seeded(generator, x.device) as seed:
        attack = APGDAttack(model, n_iter=steps, norm=_norm(norm), n_restarts=restarts, eps=eps, seed=seed,
                            loss=loss, eot_iter=draws, device=x.device)
        return attack.perturb(x, y, best_loss=draws > 1).detach()


def apgd_targeted(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, num_classes: int,
                  steps: int = 100, restarts: int = 1, norm: str = "linf", draws: int = 1,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    _, _, APGDAttack_targeted, *_ = _library()
    with _seeded(generator, x.device) as seed:
        attack = APGDAttack_targeted(model, n_iter=steps, norm=_norm(norm), n_restarts=restarts, eps=eps,
                                     seed=seed, eot_iter=draws, n_target_classes=target_classes(num_classes),
                                     device=x.device)
        return attack.perturb(x, y).detach()


def fab_targeted(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, num_classes: int,
                 steps: int = 100, restarts: int = 1, norm: str = "linf",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    *_, FABAttack_PT, _ = _library()
    with _seeded(generator, x.device) as seed:
        attack = FABAttack_PT(model, norm=_norm(norm), n_restarts=restarts, n_iter=steps, eps=eps, seed=seed,
                              targeted=True, n_target_classes=target_classes(num_classes), device=x.device)
        return attack.perturb(x, y).detach()


def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, num_classes: int,
           queries: int = 5000, restarts: int = 1, norm: str = "linf", p_init: float = 0.8,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Square attack: gradient-free, ``queries`` forward passes per sample at most."""
    *_, SquareAttack = _library()
    with _seeded(generator, x.device) as seed:
        attack = SquareAttack(model, norm=_norm(norm), n_queries=queries, eps=eps, p_init=p_init,
                              n_restarts=restarts, seed=seed, device=x.device)
        return attack.perturb(x, y).detach()


def autoattack_standard(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, num_classes: int,
                        norm: str = "linf", draws: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square 5000) with the right number of target classes;
    for a stochastic model (``draws`` > 1) its authors' version for randomised defenses (APGD-CE and
    APGD-DLR with EoT over ``draws``)."""
    AutoAttack, *_ = _library()
    with _seeded(generator, x.device) as seed:
        if draws > 1:
            attack = AutoAttack(model, eps=eps, norm=_norm(norm), seed=seed, version="rand", device=x.device)
            attack.apgd.eot_iter = draws
        else:
            attack = AutoAttack(model, eps=eps, norm=_norm(norm), seed=seed, version="standard", device=x.device)
            attack.apgd_targeted.n_target_classes = target_classes(num_classes)
            attack.fab.n_target_classes = target_classes(num_classes)
        x_adv, _ = attack.run_standard_evaluation(x, y, batch_size=max(len(x), 1))
        return x_adv.detach()


# Crafting functions of the attack registry (spikeguard/attacks/registry.py): (model, x, y, AttackCall).

def _common(call) -> dict:
    return {"num_classes": call.num_classes, "generator": call.generator, "norm": call.norm}


def craft_apgd_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor, call) -> torch.Tensor:
    return apgd(model, x, y, call.eps, loss="ce", steps=call.params["steps"], restarts=call.params["restarts"],
                draws=call.draws, **_common(call))


def craft_apgd_dlr(model: nn.Module, x: torch.Tensor, y: torch.Tensor, call) -> torch.Tensor:
    return apgd(model, x, y, call.eps, loss="dlr", steps=call.params["steps"], restarts=call.params["restarts"],
                draws=call.draws, **_common(call))


def craft_apgd_t(model: nn.Module, x: torch.Tensor, y: torch.Tensor, call) -> torch.Tensor:
    return apgd_targeted(model, x, y, call.eps, steps=call.params["steps"], restarts=call.params["restarts"],
                         draws=call.draws, **_common(call))


def craft_fab_t(model: nn.Module, x: torch.Tensor, y: torch.Tensor, call) -> torch.Tensor:
    return fab_targeted(model, x, y, call.eps, steps=call.params["steps"], restarts=call.params["restarts"],
                        **_common(call))


def craft_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, call) -> torch.Tensor:
    return autoattack_standard(model, x, y, call.eps, draws=call.draws, **_common(call))


def craft_square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, call) -> torch.Tensor:
    return square(model, x, y, call.eps, queries=call.params["queries"], restarts=call.params["restarts"],
                  p_init=call.params["p_init"], **_common(call))
