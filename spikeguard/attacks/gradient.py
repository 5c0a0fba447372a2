"""FGSM, R-FGSM and PGD under the l-infinity threat model, in [0, 1] pixel space.

Written here rather than taken from an ANN library because the SNN evaluation needs what those lack:
per-sample tracking of the most damaging iterate, an explicit random generator (no global reseeding),
expectation over transformation (EoT) for stochastic models, and eval-mode handling that keeps the spiking
layers' surrogate path active.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def margin_loss(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The best other logit minus the true one (Carlini-Wagner's margin, positive once misclassified).
    Unlike the cross-entropy it does not vanish when the softmax saturates (logits scaled up by 1e4 give
    probabilities of exactly 0 and 1 in float32 and a zero cross-entropy gradient)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    loss = logits.scatter(1, y[:, None], -torch.inf).amax(1) - true
    return loss.sum() if reduction == "sum" else loss if reduction == "none" else loss.mean()


# the losses an attack may ascend, by the name a suite gives in its ``loss`` parameter
LOSSES: dict[str, Callable[..., torch.Tensor]] = {"ce": F.cross_entropy, "margin": margin_loss}


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int = 1,
                   per_draw: bool = False, loss: str = "ce"):
    """(gradient of the summed loss (cross-entropy, or ``loss`` of LOSSES) w.r.t. x, logits). Parameters get
    no .grad.

    With ``draws`` > 1 (EoT, for stochastic models) the gradient is the mean of the per-draw gradients and
    the logits are the mean of the per-draw logits; ``per_draw`` also returns every draw's logits."""
    x = x.detach().requires_grad_(True)
    grad = torch.zeros_like(x)
    every = []
    with torch.enable_grad():
        for _ in range(draws):
            logits = model(x)
            value = LOSSES[loss](logits, y, reduction="sum")
            if value.requires_grad:  # a model that detaches its input has no gradient: zero, flagged as such
                (g,) = torch.autograd.grad(value, x, allow_unused=True)
                if g is not None:
                    grad += g
            every.append(logits.detach())
    stacked = torch.stack(every)
    if per_draw:
        return grad / draws, stacked.mean(0), stacked
    return grad / draws, stacked.mean(0)


@torch.no_grad()
def draw_logits(model: nn.Module, x: torch.Tensor, draws: int = 1) -> torch.Tensor:
    """Logits of ``draws`` forward passes, stacked: [draws, N, classes]."""
    return torch.stack([model(x) for _ in range(draws)])


def score_iterate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int,
                  gradient: bool, loss: str = "ce") -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Score an iterative attack's current iterate in one (EoT) pass: the input gradient for the next step
    when ``gradient`` (the same forward pass serves both), the per-sample loss, and whether every draw
    misclassifies the sample. A stochastic model's sample counts as broken (and stops being attacked) only
    then; for a deterministic model all draws agree, so EoT changes nothing there."""
    if gradient:
        grad, logits, every = input_gradient(model, x, y, draws, per_draw=True, loss=loss)
    else:
        grad, every = None, draw_logits(model, x, draws)
        logits = every.mean(0)
    return grad, LOSSES[loss](logits, y, reduction="none"), (every.argmax(-1) != y).all(0)


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1).detach()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, draws: int = 1) -> torch.Tensor:
    grad, _ = input_gradient(model, x, y, draws)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def rfgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float | None = None,
          generator: torch.Generator | None = None, draws: int = 1) -> torch.Tensor:
    """R-FGSM (Tramer et al. 2018): a random signed step of size alpha, then a gradient-sign step of
    size eps - alpha from there. alpha defaults to eps / 2."""
    alpha = eps / 2 if alpha is None else alpha
    noise = torch.randn(x.shape, generator=generator, device="cpu").to(x.device, x.dtype)
    x_start = (x + alpha * noise.sign()).clamp(0, 1)
    grad, _ = input_gradient(model, x_start, y, draws)
    return _project(x_start + (eps - alpha) * grad.sign(), x, eps)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
        random_start: bool = True, generator: torch.Generator | None = None, keep_best: bool = True,
        restarts: int = 1, draws: int = 1, loss: str = "ce") -> torch.Tensor:
    """Projected gradient ascent on the cross-entropy (or ``loss``: "margin") in the eps ball around x,
    clipped to [0, 1].

    With ``keep_best`` every sample returns the first iterate that is misclassified, or failing that the
    iterate of highest loss over all steps and restarts, so more steps or restarts never return a weaker
    example for any sample. A sample stops being attacked once it is misclassified (early stop: the
    result is the same, the cost falls with the number of samples still standing). Restarts after the
    first always start at a random point and only attack samples not yet broken. With ``draws`` > 1 (EoT
    for a stochastic model) gradients and loss are averaged over draws and a sample counts as broken only
    when every draw misclassifies it.
    Without ``keep_best``: one run, and the last iterate is returned (the textbook PGD).
    """
    x = x.detach()
    if eps == 0 or steps == 0:
        return x.clone()
    if not keep_best:
        x_adv = (x + _start(x, eps, random_start, generator)).clamp(0, 1)
        for _ in range(steps):
            grad, _ = input_gradient(model, x_adv, y, draws, loss=loss)
            x_adv = _project(x_adv + alpha * grad.sign(), x, eps)
        return x_adv
    best = x.clone()
    best_loss = torch.full((x.shape[0],), -float("inf"), device=x.device, dtype=x.dtype)
    broken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for restart in range(max(restarts, 1)):
        todo = (~broken).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        xs, ys = x[todo], y[todo]
        run_best, run_loss, run_broken = _tracked_run(model, xs, ys, eps, alpha, steps,
                                                      _start(xs, eps, random_start or restart > 0, generator),
                                                      draws, loss)
        better = run_broken | (run_loss > best_loss[todo])
        best[todo[better]] = run_best[better]
        best_loss[todo[better]] = run_loss[better]
        broken[todo[run_broken]] = True
    return best


def _start(x: torch.Tensor, eps: float, random: bool, generator: torch.Generator | None) -> torch.Tensor:
    if not random:
        return torch.zeros_like(x)
    noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device, x.dtype)
    return (2 * noise - 1) * eps


def _tracked_run(model, x, y, eps, alpha, steps, delta, draws, loss="ce"):
    """One PGD run with per-sample best tracking and early stop; returns (best, best_loss, broken)."""
    x_adv = (x + delta).clamp(0, 1)
    best = x_adv.clone()
    best_loss = torch.full((x.shape[0],), -float("inf"), device=x.device, dtype=x.dtype)
    broken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    active = torch.arange(x.shape[0], device=x.device)
    for step in range(steps + 1):
        current = x_adv[active]
        grad, value, wrong = score_iterate(model, current, y[active], draws, gradient=step < steps, loss=loss)
        better = wrong | (value > best_loss[active])
        best[active[better]] = current[better]
        best_loss[active[better]] = value[better]
        broken[active[wrong]] = True
        if step == steps:
            break
        keep = ~wrong
        active, current, grad = active[keep], current[keep], grad[keep]
        if active.numel() == 0:
            break
        x_adv[active] = _project(current + alpha * grad.sign(), x[active], eps)
    return best, best_loss, broken


# Crafting functions of the attack registry (spikeguard/attacks/registry.py): (model, x, y, AttackCall).

def craft_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, call) -> torch.Tensor:
    return fgsm(model, x, y, call.eps, draws=call.draws)


def craft_rfgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, call) -> torch.Tensor:
    return rfgsm(model, x, y, call.eps, call.params["alpha"] * call.eps, generator=call.generator, draws=call.draws)


def craft_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, call) -> torch.Tensor:
    """PGD with the suite's steps, restarts and step (a fraction of eps; default 2.5 eps / steps)."""
    p = call.params
    steps = p.get("steps", 10)
    alpha = p["alpha"] * call.eps if p.get("alpha") is not None else 2.5 * call.eps / steps
    return pgd(model, x, y, call.eps, alpha, steps, random_start=p.get("random_start", True),
               generator=call.generator, restarts=p.get("restarts", 1), draws=call.draws, loss=p.get("loss", "ce"))
