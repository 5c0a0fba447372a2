"""The input gradient g = df/dx of the true-class probability and the norms the theory compares.

f is docs/method.md's two-class probability sigmoid(z_y - z_k). The derivation of every quantity computed here
is in docs/theory.md.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from spikeguard.defenses.sparsity import probability_and_margin_gradients
from spikeguard.runtime import eval_mode

# An entry counts as "small" when |g_i| <= SMALL_TOLERANCE * max_j |g_j| (relative, so scale-free).
SMALL_TOLERANCE = 1e-3


def probability_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(g, f): df/dx per sample and f itself, in eval mode, through whatever backward estimator the
    model's spiking layers are set to. The rival k is the strongest one at x (locally constant)."""
    with eval_mode(model):
        grads = probability_and_margin_gradients(model, x, y)
    return grads["grad_f"], grads["f"]


def gradient_norms(g: torch.Tensor, tolerance: float = SMALL_TOLERANCE) -> dict[str, torch.Tensor]:
    """Per-sample norms of g ([N, ...]): zero_fraction (exact zeros), small_fraction (|g_i| <= tolerance *
    max |g|), l0 (count of non-zeros), l0_fraction (l0 / dims), l1, l2, l1_over_l2, sqrt_l0, and
    effective_support = (l1 / l2)^2, a scale-free count of the entries that matter (<= l0)."""
    flat = g.flatten(1).double()
    dims = flat.shape[1]
    mag = flat.abs()
    l0 = (mag > 0).sum(1).double()
    l1, l2 = mag.sum(1), flat.norm(dim=1)
    largest = mag.amax(1, keepdim=True)
    ratio = torch.where(l2 > 0, l1 / l2.clamp_min(1e-300), torch.zeros_like(l1))
    return {
        "zero_fraction": 1 - l0 / dims,
        "small_fraction": (mag <= tolerance * largest).double().mean(1),
        "l0": l0,
        "l0_fraction": l0 / dims,
        "l1": l1,
        "l2": l2,
        "l1_over_l2": ratio,
        "sqrt_l0": l0.sqrt(),
        "effective_support": ratio.pow(2),
    }


def first_order(g: torch.Tensor, x: torch.Tensor, eps: float) -> dict[str, torch.Tensor]:
    """Per-sample first-order predictions of how far a perturbation of size eps moves f (theory.md, 1-4).

    adv: eps * ||g||_1, the largest change over the l-inf ball; adv_box: the same inside [0, 1] (each
    pixel can move only as far as the box allows); sign_low/sign_high and rand_low/rand_high bracket
    E|g . delta| for random signs and uniform noise; ratio_bound_sign / ratio_bound_rand bound the
    first-order adversarial-to-random ratio by sqrt(||g||_0).
    """
    flat, xf = g.flatten(1).double(), x.flatten(1).double()
    norms = gradient_norms(g)
    # f falls fastest when pixel i moves against sign(g_i): down by at most x_i, up by at most 1 - x_i.
    room = torch.where(flat > 0, xf, 1 - xf).clamp(0, 1)
    l2 = norms["l2"]
    return {
        "adv": eps * norms["l1"],
        "adv_box": (flat.abs() * room.clamp(max=eps)).sum(1),
        "sign_low": eps * l2 / math.sqrt(2),
        "sign_high": eps * l2,
        "rand_low": eps * l2 / (2 * math.sqrt(2)),
        "rand_high": eps * l2 / math.sqrt(3),
        "ratio_bound_sign": math.sqrt(2) * norms["sqrt_l0"],
        "ratio_bound_rand": 2 * math.sqrt(2) * norms["sqrt_l0"],
    }


def cauchy_schwarz_violations(norms: dict[str, torch.Tensor], rtol: float = 1e-9) -> int:
    """Samples breaking ||g||_1 <= sqrt(||g||_0) * ||g||_2 (an identity: must be 0)."""
    return int((norms["l1"] > norms["sqrt_l0"] * norms["l2"] * (1 + rtol) + 1e-300).sum())
