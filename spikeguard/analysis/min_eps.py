"""The smallest eps that flips each prediction, by bisection, for an attack and for random noise.

Bisection assumes that a flip at eps implies a flip at every larger eps. Neither attacks nor noise
guarantee that, so the value returned is always an eps at which a flip was observed (an upper bound on the
true minimum), found to within eps_max / 2**steps of the boundary the bisection brackets.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from spikeguard.analysis.gap import Attack
from spikeguard.attacks.ensemble import predict
from spikeguard.errors import UserError

# (sample indices [M], eps per sample [M]) -> flipped [M] (bool); both on the CPU.
Flips = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def bisect_min_eps(flips: Flips, n: int, eps_max: float, steps: int,
                   already_wrong: torch.Tensor | None = None) -> torch.Tensor:
    """Per sample: 0 if ``already_wrong``; inf if no flip at eps_max (never flipped within eps_max); else
    an eps in (0, eps_max] with a verified flip, at most eps_max / 2**steps above the bracketed boundary."""
    if not (math.isfinite(eps_max) and eps_max > 0):
        raise UserError(f"eps_max must be a positive number, got {eps_max}")
    if steps < 0:
        raise UserError(f"bisection steps must be at least 0, got {steps}")
    wrong = torch.zeros(n, dtype=torch.bool) if already_wrong is None else already_wrong.cpu().bool()
    result = torch.full((n,), math.inf, dtype=torch.float64)
    result[wrong] = 0.0
    active = (~wrong).nonzero().squeeze(1)
    if active.numel():
        active = active[flips(active, torch.full((active.numel(),), float(eps_max), dtype=torch.float64)).cpu()]
    lo = torch.zeros(n, dtype=torch.float64)
    hi = torch.full((n,), float(eps_max), dtype=torch.float64)
    for _ in range(steps):
        if active.numel() == 0:
            break
        mid = (lo[active] + hi[active]) / 2
        flipped = flips(active, mid).cpu()
        hi[active[flipped]] = mid[flipped]
        lo[active[~flipped]] = mid[~flipped]
    result[active] = hi[active]
    return result


def attack_flips(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack_at: Callable[[float], Attack]) -> Flips:
    """Flips under ``attack_at(eps)``. Attacks take one eps per call, so samples are grouped by eps (after
    k bisection steps there are at most 2**k distinct values)."""
    def flips(idx: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(idx.numel(), dtype=torch.bool)
        for value in eps.unique().tolist():
            sel = (eps == value).nonzero().squeeze(1)
            sub = idx[sel].to(x.device)
            x_adv = attack_at(value)(model, x[sub], y[sub])
            out[sel] = (predict(model, x_adv) != y[sub]).cpu()
        return out
    return flips


def noise_flips(model: nn.Module, x: torch.Tensor, y: torch.Tensor, directions: torch.Tensor) -> Flips:
    """Flips under x + eps * d for any of the fixed ``directions`` [K, N, ...] (clipped to [0, 1])."""
    def flips(idx: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        dev = idx.to(x.device)
        scale = eps.to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))
        out = torch.zeros(idx.numel(), dtype=torch.bool, device=x.device)
        for d in directions:
            out |= predict(model, (x[dev] + scale * d[dev]).clamp(0, 1)) != y[dev]
        return out.cpu()
    return flips


def _lower_median(values: list[float]) -> float | None:
    """The lower median (an order statistic, so it is defined when some values are inf); None if empty
    or if it is inf (more than half never flipped)."""
    if not values:
        return None
    v = sorted(values)[(len(values) - 1) // 2]
    return v if math.isfinite(v) else None


def summarize_min_eps(adv: torch.Tensor, rand: torch.Tensor, adv_max: float, rand_max: float, steps: int) -> dict:
    """Counts and medians over the samples classified correctly without perturbation (min eps > 0); the
    attack was bisected on (0, adv_max], the noise on (0, rand_max]."""
    ok = (adv > 0).tolist()
    a = [v for v, keep in zip(adv.tolist(), ok) if keep]
    r = [v for v, keep in zip(rand.tolist(), ok) if keep]

    def side(values: list[float], eps_max: float) -> dict:
        finite = [v for v in values if math.isfinite(v)]
        return {"eps_max": eps_max, "tolerance": eps_max / 2 ** steps, "median": _lower_median(values),
                "mean_of_flipped": sum(finite) / len(finite) if finite else None,
                "flipped": len(finite), "never_flipped": len(values) - len(finite)}

    both = [rv / av for av, rv in zip(a, r) if math.isfinite(av) and math.isfinite(rv)]
    return {
        "steps": steps, "samples": len(a), "clean_wrong": int((adv == 0).sum()),
        "adv": side(a, adv_max), "rand": side(r, rand_max),
        "ratio_median": _lower_median(both),
        "ratio_samples": len(both),
        # random noise never flipped these within its range while the attack did: their ratio exceeds
        # rand_max / min_eps_adv and is left out of ratio_median (which is therefore an underestimate)
        "ratio_above_range": sum(1 for av, rv in zip(a, r) if math.isfinite(av) and not math.isfinite(rv)),
    }
