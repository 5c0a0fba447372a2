"""Encoders turn an image batch [N, C, H, W] in [0, 1] into the time-folded input [T * N, C, H, W]."""

from __future__ import annotations

import torch
from torch import nn


class DirectEncoder(nn.Module):
    """Normalise, then feed the same analogue image at every time step (the paper's encoding)."""

    def __init__(self, time_steps: int, mean, std):
        super().__init__()
        self.time_steps = int(time_steps)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return x.repeat(self.time_steps, *([1] * (x.dim() - 1)))


class PoissonEncoder(nn.Module):
    """Bernoulli spikes with probability equal to the pixel value at every step.

    Backward is straight-through (d spike / d pixel := 1), so gradient attacks see the expected input.
    The model becomes stochastic: honest evaluation of it needs EoT (expectation over draws).
    """

    def __init__(self, time_steps: int, mean=None, std=None):
        super().__init__()
        self.time_steps = int(time_steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.repeat(self.time_steps, *([1] * (x.dim() - 1)))
        draws = (torch.rand_like(x) < x).to(x.dtype)
        return x + (draws - x).detach()


ENCODERS = {"direct": DirectEncoder, "poisson": PoissonEncoder}
