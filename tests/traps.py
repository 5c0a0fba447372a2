"""Models that keep every decision of an honest base SNN but hide it from the gradient (issue 21), and the
attack that knows each trick. None of the wrappers changes a decision of its base (batch_statistics and
PythonRandomNoise excepted: they are the trap classes "batch-dependent" and "randomised"), so a trap's true
robust accuracy is its base's, and an evaluator's headline must come within 5 points of ``trick_aware``
or say "not a bound" and why. Used by the tests and by experiments/trust_traps.py (n = 100).
"""

from __future__ import annotations

import copy
import random

import torch
import torch.nn.functional as F
from torch import nn

from spikeguard.attacks import pgd
from spikeguard.evaluation import bank
from spikeguard.snn import IFNeuron


class _FlipWhere(torch.autograd.Function):
    """Identity forward; backward negated on the rows of ``mask``."""

    @staticmethod
    def forward(ctx, logits, mask):
        ctx.save_for_backward(mask)
        return logits.view_as(logits)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return torch.where(mask[:, None], -grad, grad), None


class FlatLiar(nn.Module):
    """Hard labels: ``scale`` times the one-hot of the base's decision. The backward goes straight through
    to the base's logits but is sign-flipped where the base is confident (top softmax above ``confident``):
    a flat output (no score for Square to climb) plus a backward that lies on part of the inputs."""

    def __init__(self, base: nn.Module, scale: float = 10.0, confident: float = 0.9):
        super().__init__()
        self.base, self.scale, self.confident = base, scale, confident

    def forward(self, x):
        logits = self.base(x)
        with torch.no_grad():
            mask = torch.softmax(logits, 1).amax(1) > self.confident
        routed = _FlipWhere.apply(logits, mask)
        hard = self.scale * F.one_hot(logits.argmax(1), logits.shape[1]).to(logits.dtype)
        return routed + (hard - routed).detach()


class FlippedWrapper(nn.Module):
    """The base's logits with the input gradient negated everywhere: a wrapper that a substitute copied
    from the target (its ANN twin, wrapper included) inherits, so its transfer examples point away too."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    def forward(self, x):
        out = self.base(x)
        return _FlipWhere.apply(out, torch.ones(out.shape[0], dtype=torch.bool, device=out.device))


class ScaledLogits(nn.Module):
    """The base's logits times ``factor``: same decisions, a softmax saturated to exact 0 and 1 in float32,
    so the cross-entropy gradient is exactly zero; a margin loss is unaffected."""

    def __init__(self, base: nn.Module, factor: float = 1e4):
        super().__init__()
        self.base, self.factor = base, factor

    def forward(self, x):
        return self.base(x) * self.factor


class PythonRandomNoise(nn.Module):
    """A randomised defence drawing from Python's ``random`` module (not torch's RNG): uniform input noise of
    half-width ``scale`` from a generator seeded by one ``random.getrandbits`` call per forward pass."""

    def __init__(self, base: nn.Module, scale: float = 0.05):
        super().__init__()
        self.base, self.scale = base, scale

    def forward(self, x):
        generator = torch.Generator().manual_seed(random.getrandbits(32))
        noise = (2 * torch.rand(x.shape, generator=generator) - 1).to(x.device, x.dtype) * self.scale
        return self.base((x + noise).clamp(0, 1))


def dead_zone(model: nn.Module, factor: float = 2.0 ** 12) -> nn.Module:
    """A copy of a spikeguard SNN whose every threshold, and the affine layer feeding it (BatchNorm, or the
    convolution or linear layer when there is none), is multiplied by ``factor`` (a power of two, so every
    membrane is scaled exactly): bit-identical spikes and logits, but every compact-support surrogate
    (triangle, rectangular, HART) is exactly zero wherever the membrane is not within its width of the
    threshold, which at this scale is almost everywhere."""
    scaled = copy.deepcopy(model)
    feeding = None
    for module in scaled.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.Conv2d, nn.Linear)):
            feeding = module
        elif isinstance(module, IFNeuron):
            assert feeding is not None, "a neuron with no affine layer before it"
            with torch.no_grad():
                feeding.weight.mul_(factor)
                if feeding.bias is not None:
                    feeding.bias.mul_(factor)
            module.threshold *= factor
            feeding = None  # each affine layer is scaled once
    return scaled


def batch_statistics(model: nn.Module) -> nn.Module:
    """A copy whose BatchNorm layers normalise with the batch's own statistics even in eval mode
    (track_running_stats off): a sample's output depends on which other samples share its batch."""
    changed = copy.deepcopy(model)
    for module in changed.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False
            module.running_mean = module.running_var = module.num_batches_tracked = None
    return changed


def frozen(model: nn.Module) -> nn.Module:
    """A copy with requires_grad off on every parameter (a model loaded for inference only)."""
    copied = copy.deepcopy(model)
    copied.requires_grad_(False)
    return copied


# the gradient sources of the trick-aware attack: the quick suite's members before issue 21
TRICK_AWARE_MEMBERS = ("triangle:1", "atan:2", "bptr", "hart:0.25", "ann", "triangle:0.5", "fast_sigmoid:25")


def trick_aware(base: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 100,
                members: tuple[str, ...] = TRICK_AWARE_MEMBERS, losses: tuple[str, ...] = ("ce", "margin"),
                seed: int = 0) -> torch.Tensor:
    """What an attacker who knows the trick does: PGD of ``steps`` with each loss under each gradient source
    of the honest ``base`` inside the trap. Returns, per sample, whether the base still classifies it
    correctly after every (member, loss) pair (the per-sample worst case; the trap's decisions are the base's)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        standing = base.eval()(x).argmax(1) == y
    for member in members:
        for loss in losses:
            idx = standing.nonzero().squeeze(1)
            if idx.numel() == 0:
                return standing
            with bank.under(base, member) as target:
                x_adv = pgd(target, x[idx], y[idx], eps, 2.5 * eps / steps, steps, generator=generator, loss=loss)
            with torch.no_grad():
                standing[idx] = base(x_adv).argmax(1) == y[idx]
    return standing
