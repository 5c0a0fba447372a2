"""An ensemble evaluated as one model: the mean of its members' logits.

An attack on it differentiates through every member at once (autograd sums their gradients), a backward
estimator set on it reaches every member's spiking layers (they are its submodules), and its energy is the
members' summed. Written here because it is three lines and must stay an ordinary nn.Module for every attack,
probe and wrapper spikeguard applies to a single model.
"""

from __future__ import annotations

import torch
from torch import nn


class LogitAverage(nn.Module):
    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(0)
