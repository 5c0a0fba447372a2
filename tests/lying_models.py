"""Models built to lie to gradient attacks, around an honest digits classifier, and the attack that knows
each trick. The evaluator must not take their word: its escalation has to come close to the trick-aware
attack (tests/test_trust.py; experiments/lying_models.py measures the same on more samples)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def honest_classifier(x: torch.Tensor, y: torch.Tensor, seed: int = 0, epochs: int = 15) -> nn.Module:
    """A small ReLU CNN for 8x8 digits, trained for ``epochs`` epochs (about 97% test accuracy)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                          nn.AvgPool2d(2), nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(y)).split(64):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


class _ZeroGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.zeros_like(grad)


class _FlippedGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


class ZeroBackward(nn.Module):
    """The honest classifier's outputs; its input gradient is exactly zero."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(_ZeroGradient.apply(x))


class FlippedBackward(nn.Module):
    """The honest classifier's outputs; its input gradient points the other way."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(_FlippedGradient.apply(x))


class Decoy(nn.Module):
    """The honest classifier, except when the input requires a gradient: then a decoy (the classifier on
    a blurred, inverted input), whose gradient leads nowhere useful."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if torch.is_grad_enabled() and x.requires_grad:
            return self.inner(1 - F.avg_pool2d(x, 3, stride=1, padding=1))
        return self.inner(x)


LIARS = {"zero-backward": ZeroBackward, "flipped-backward": FlippedBackward, "decoy": Decoy}


def trick_aware_accuracy(inner: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
                         restarts: int = 1) -> float:
    """PGD on the honest classifier inside the liar (what an attacker who knows the trick does), scored on
    the same classifier: the liar's outputs are the classifier's."""
    from spikeguard.attacks import pgd

    generator = torch.Generator().manual_seed(0)
    x_adv = pgd(inner, x, y, eps, 2.5 * eps / steps, steps, generator=generator, restarts=restarts)
    with torch.no_grad():
        return (inner(x_adv).argmax(1) == y).float().mean().item()
