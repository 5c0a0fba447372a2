"""FGSM and PGD under the l-infinity threat model, in [0, 1] pixel space.

Written here rather than taken from an ANN library because the SNN evaluation needs what those lack:
per-sample tracking of the most damaging iterate, an explicit random generator (no global reseeding), and
eval-mode handling that keeps the spiking layers' surrogate path active.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """BatchNorm and dropout in eval mode for the block, then every module's own mode restored.
    The spiking layers' backward estimator is untouched, so gradients still flow through spikes."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(gradient of the summed cross-entropy w.r.t. x, logits). Parameters get no .grad."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        loss = F.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad, logits.detach()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    grad, _ = input_gradient(model, x, y)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
        random_start: bool = True, generator: torch.Generator | None = None,
        keep_best: bool = True) -> torch.Tensor:
    """Projected gradient ascent on the cross-entropy in the eps ball around x, clipped to [0, 1].

    With ``keep_best`` every sample returns the first iterate that is misclassified, or failing that the
    iterate of highest loss, checked on the same forward pass that computes the next gradient (plus one
    final check), so more steps can never return a weaker example for any sample.
    """
    x = x.detach()
    if eps == 0 or steps == 0:
        return x.clone()
    delta = torch.zeros_like(x)
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device, x.dtype)
        delta = (2 * noise - 1) * eps
    x_adv = (x + delta).clamp(0, 1)
    best = x_adv.clone()
    best_loss = torch.full((x.shape[0],), -float("inf"), device=x.device)
    broken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    def remember(candidate: torch.Tensor, logits: torch.Tensor) -> None:
        loss = F.cross_entropy(logits, y, reduction="none")
        wrong = logits.argmax(1) != y
        better = ~broken & (wrong | (loss > best_loss))
        best[better] = candidate[better]
        best_loss[better] = loss[better]
        broken.logical_or_(wrong)

    for _ in range(steps):
        grad, logits = input_gradient(model, x_adv, y)
        if keep_best:
            remember(x_adv, logits)
        x_adv = torch.min(torch.max(x_adv + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1).detach()
    if not keep_best:
        return x_adv
    with torch.no_grad():
        remember(x_adv, model(x_adv))
    return best
