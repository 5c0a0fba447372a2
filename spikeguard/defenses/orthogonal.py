"""The weight retraction of RAT (Ding et al., 2022): W <- (1 + beta) W - beta W W^T W after each step.

It pulls every weight matrix toward a Parseval-tight frame (W W^T = I), which bounds each layer's
Lipschitz constant. Conv weights are viewed as [out, in * k * k]; linear layers with many rows update a
random subset of rows per step to keep the cost down.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def retract(weight: torch.Tensor, beta: float, rows: torch.Tensor | None = None) -> None:
    """One in-place retraction step of ``weight`` (optionally of the given rows only)."""
    w = weight.view(weight.shape[0], -1)
    sub = w if rows is None else w[rows]
    updated = (1 + beta) * sub - beta * (sub @ sub.T) @ sub
    if rows is None:
        w.copy_(updated)
    else:
        w[rows] = updated


@torch.no_grad()
def retract_model(model: nn.Module, beta: float = 0.004, row_fraction: float = 0.3, min_rows: int = 200,
                  generator: torch.Generator | None = None) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            retract(module.weight, beta)
        elif isinstance(module, nn.Linear):
            n = module.weight.shape[0]
            rows = None
            if n >= min_rows:
                rows = torch.randperm(n, generator=generator)[: max(1, int(row_fraction * n))]
                rows = rows.to(module.weight.device)
            retract(module.weight, beta, rows)
