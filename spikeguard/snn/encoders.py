"""Encoders turn an input batch into the time-folded input [T * N, C, H, W] the spiking body runs on.

Images [N, C, H, W] in [0, 1] go through the direct or Poisson encoder; event frames [N, T, C, H, W]
(CIFAR10-DVS, spikeguard.data.cifar10_dvs) through the frames encoder, which feeds frame t at step t. Their names and facts are registered in
spikeguard/snn/registry.py (ENCODERS)."""

from __future__ import annotations

import torch
from torch import nn


class DirectEncoder(nn.Module):
    """Normalise, then feed the same analogue image at every time step (the paper's encoding)."""

    mean: torch.Tensor  # buffers registered in __init__
    std: torch.Tensor

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


class FramesEncoder(nn.Module):
    """Event frames [N, T, C, H, W] -> [T * N, C, H, W]: normalised, frame t at time step t.

    Time-major, like the direct encoder's repeat, so the neurons' [T, N, ...] view lines up. The ANN twin
    keeps all T frames (spikeguard.snn.control.ann_twin): its ReLU body is memoryless, so it averages the
    logits of the frames, which is what the SNN sees."""

    mean: torch.Tensor  # buffers registered in __init__
    std: torch.Tensor

    def __init__(self, time_steps: int, mean, std):
        super().__init__()
        self.time_steps = int(time_steps)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.time_steps:
            raise ValueError(f"frames encoder expects [N, {self.time_steps}, C, H, W] event frames, "
                             f"got {tuple(x.shape)}")
        x = (x - self.mean) / self.std
        return x.transpose(0, 1).reshape(-1, *x.shape[2:])
