"""Exact input-gradient regularisation (GR): the squared l2 norm of d loss / d x by double backprop."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spikeguard.adapters import stateless


def gradient_norm_terms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, mean over samples of ||d CE_i / d x_i||_2^2), differentiable w.r.t. the parameters.

    The cross-entropy is summed, not averaged, before differentiating so that each sample's gradient is
    that of its own loss (not scaled by 1 / batch size).
    """
    with stateless(model) as model:  # from a clean SpikingJelly / snnTorch state; restored after
        x = x.detach().requires_grad_(True)
        logits = model(x)
        (g,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x, create_graph=True)
        return logits, g.flatten(1).pow(2).sum(1).mean()
