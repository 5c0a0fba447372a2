"""PGD on a gradient estimated from the model's outputs alone (NES: antithetic Gaussian directions).

Written here because the attack libraries spikeguard uses have none, and the escalation needs an attack
that is as strong as PGD yet never asks the model for a gradient: a model that lies in its backward pass
(a zero or sign-flipped gradient, a decoy function whenever the input requires a gradient) answers these
queries honestly, because they are ordinary forward passes without autograd. Smoothing with sigma > 0 also
gives a useful direction where the true gradient is zero almost everywhere (spikes, input quantisers).

The estimate of the gradient of the margin loss L(x) = max_{j != y} z_j - z_y at x is
    g = 1 / (2 sigma k) * sum_i (L(x + sigma u_i) - L(x - sigma u_i)) u_i,   i = 1..k,
with u_i random orthogonal directions (NES draws them Gaussian; orthogonal ones waste no queries on
overlapping directions), which costs 2k queries per step; the step is eps-scaled sign ascent, projected on the eps ball and [0, 1]
(as in PGD). Every sample returns its first misclassified iterate, or the one of highest loss.
"""

from __future__ import annotations

import torch
from torch import nn

from spikeguard.attacks.gradient import margin_loss

CHUNK = 1024  # probe inputs per forward pass


@torch.no_grad()
def _losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample margin loss max_{j != y} z_j - z_y of the (draw-averaged) logits, and whether every draw is
    wrong. The margin, unlike the cross-entropy, does not saturate in float32 on confident samples, where
    finite differences of the cross-entropy vanish."""
    every = torch.stack([model(x) for _ in range(draws)])
    return margin_loss(every.mean(0), y, reduction="none"), (every.argmax(-1) != y).all(0)


def _directions(n: int, k: int, sample_shape: torch.Size, generator: torch.Generator | None) -> torch.Tensor:
    """[n, k', *sample_shape]: per sample, k' = min(k, d) orthonormal random directions (scaled to the
    norm sqrt(d) of a Gaussian one). Orthogonal directions estimate the gradient's projection on their span
    without redundancy: k' = d gives the exact finite-difference gradient."""
    d = int(torch.Size(sample_shape).numel())
    k = min(k, d)
    gaussian = torch.randn((n, d, k), generator=generator, device="cpu")
    q, _ = torch.linalg.qr(gaussian)                    # [n, d, k], orthonormal columns
    return (q.transpose(1, 2) * d ** 0.5).reshape(n, k, *sample_shape)


@torch.no_grad()
def nes_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 20, directions: int = 50,
            sigma: float = 0.1, alpha: float | None = None, generator: torch.Generator | None = None,
            draws: int = 1) -> torch.Tensor:
    """``sigma`` and ``alpha`` are fractions of eps (alpha default 2.5 / steps)."""
    x = x.detach()
    if eps == 0 or steps == 0 or len(x) == 0:
        return x.clone()
    alpha = (2.5 / steps if alpha is None else alpha) * eps
    radius = sigma * eps
    x_adv = x.clone()
    best, (best_loss, broken) = x.clone(), _losses(model, x, y, draws)
    active = (~broken).nonzero().squeeze(1)
    for _ in range(steps):
        if active.numel() == 0:
            break
        n = len(active)
        u = _directions(n, directions, x.shape[1:], generator).to(x.device, x.dtype)
        centre = x_adv[active][:, None]
        probes = torch.cat([centre + radius * u, centre - radius * u], 1).flatten(0, 1)  # [n * 2k, ...]
        labels = y[active].repeat_interleave(2 * u.shape[1])
        loss = torch.cat([_losses(model, probes[j:j + CHUNK], labels[j:j + CHUNK], draws)[0]
                          for j in range(0, len(probes), CHUNK)]).reshape(n, 2, u.shape[1])
        weights = loss[:, 0] - loss[:, 1]                                              # [n, k']
        grad = (weights[..., None] * u.flatten(2)).sum(1).reshape(n, *x.shape[1:])
        step = x_adv[active] + alpha * grad.sign()
        x_adv[active] = torch.min(torch.max(step, x[active] - eps), x[active] + eps).clamp(0, 1)
        loss, wrong = _losses(model, x_adv[active], y[active], draws)
        better = wrong | (loss > best_loss[active])
        best[active[better]] = x_adv[active[better]]
        best_loss[active[better]] = loss[better]
        active = active[~wrong]
    return best


def craft_nes_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, call) -> torch.Tensor:
    p = call.params
    return nes_pgd(model, x, y, call.eps, steps=p["steps"], directions=p["directions"], sigma=p["sigma"],
                   generator=call.generator, draws=call.draws)
