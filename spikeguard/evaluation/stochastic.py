"""Stochastic models (Poisson encoding, noisy neurons): detection, and scoring averaged over draws.

Attacking one random draw and scoring another overstates robustness; so does scoring a single draw. A
stochastic model is attacked with EoT (gradients averaged over draws) and scored by its accuracy averaged
over the same number of draws.
"""

from __future__ import annotations

import torch
from torch import nn

from spikeguard.runtime import eval_mode


@torch.no_grad()
def is_stochastic(model: nn.Module, x: torch.Tensor) -> bool:
    """True when two forward passes on the same input differ."""
    with eval_mode(model):
        return not torch.equal(model(x), model(x))


@torch.no_grad()
def correct_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int = 1) -> torch.Tensor:
    """Per sample, the fraction of ``draws`` forward passes that classify it correctly (0 or 1 when the
    model is deterministic and draws = 1)."""
    with eval_mode(model):
        hits = sum((model(x).argmax(1) == y).float() for _ in range(draws))
    return hits / draws
