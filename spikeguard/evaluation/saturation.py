"""Whether the model's softmax is saturated: exactly one-hot in float32 on clean-correct samples.

Logits far apart (a model scaling its outputs by 1e4, or one trained to huge margins) make the softmax
exactly 0 and 1 in float32, so the cross-entropy and its input gradient are exactly zero although the
decision is an ordinary function of the input: an attack on the margin between logits is unaffected. The
zero-gradient flag says so (flags.zero_gradient_flag), instead of sending the user to black-box attacks.
"""

from __future__ import annotations

import torch
from torch import nn

from spikeguard.runtime import eval_mode, forked_rng


@torch.no_grad()
def softmax_saturation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict:
    """On the probe samples ``x`` (labels ``y``): how many are classified correctly, and how many of those
    have a softmax that is exactly one-hot in float32 (one draw under ``seed`` for a stochastic model)."""
    with eval_mode(model), forked_rng(x.device, seed=seed):
        logits = model(x).float()
    right = logits.argmax(1) == y
    one_hot = torch.softmax(logits, 1).amax(1) == 1.0
    return {"correct": int(right.sum()), "one_hot": int((right & one_hot).sum())}
