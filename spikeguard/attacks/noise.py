"""Random perturbations of the same size as the attacks: the baseline that adversarial robustness is
compared with (docs/method.md's rho_rand), and a sanity check (noise must never beat a white-box attack)."""

from __future__ import annotations

import torch


def uniform_noise(x: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + U(-eps, eps) per pixel, clipped to [0, 1]."""
    u = torch.rand(x.shape, generator=generator, device="cpu").to(x.device, x.dtype)
    return (x + (2 * u - 1) * eps).clamp(0, 1)


def random_signs(x: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + eps * s with s uniform in {-1, +1} per pixel (a random vertex of the l-inf ball), clipped."""
    u = torch.rand(x.shape, generator=generator, device="cpu").to(x.device, x.dtype)
    return (x + eps * torch.where(u < 0.5, -1.0, 1.0).to(x.dtype)).clamp(0, 1)


NOISES = {"random-uniform": uniform_noise, "random-sign": random_signs}


# Crafting functions of the attack registry (one random draw each; the model is not used).

def craft_uniform(model, x: torch.Tensor, y: torch.Tensor, call) -> torch.Tensor:
    return uniform_noise(x, call.eps, call.generator)


def craft_signs(model, x: torch.Tensor, y: torch.Tensor, call) -> torch.Tensor:
    return random_signs(x, call.eps, call.generator)
