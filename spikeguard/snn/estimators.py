"""Backward estimators: how a gradient passes through the non-differentiable spike.

A spike is H(v) with v = u - threshold. Its forward pass never changes; its backward pass is a choice.
Four kinds of choice live here:

* surrogate estimators replace dH/dv by a smooth bump sg(v) at every time step (BPTT);
* the rate estimator (BPTR / RGA) treats a layer as a map from mean input current to firing rate and
  passes the slope of that map, averaged over time (see ``rate_slope``);
* ``hart`` detaches the membrane between time steps, takes the triangle surrogate at each step and hands
  every step's input the time-mean of those per-step gradients (temporal and rate information mixed);
* ``pdsg`` is a Gaussian surrogate whose width is the per-channel standard deviation of the membrane
  potential measured in the forward pass (see ``membrane_sigma``).

Each estimator has a stable name, ``family`` or ``family:width`` (``triangle:1.0``, ``sigmoid:4``,
``bptr``, ``hart:0.5``, ``pdsg``), parsed by :func:`parse_estimator`. docs/estimators.md states the rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from spikeguard.errors import UserError

Derivative = Callable[[torch.Tensor, float], torch.Tensor]


def triangle(v: torch.Tensor, gamma: float) -> torch.Tensor:
    """max(0, gamma - |v|) / gamma^2: unit area, support [-gamma, gamma] (the training surrogate)."""
    return (gamma - v.abs()).clamp(min=0) / (gamma * gamma)


def sigmoid(v: torch.Tensor, alpha: float) -> torch.Tensor:
    """Derivative of sigmoid(alpha * v): alpha * s * (1 - s)."""
    s = torch.sigmoid(alpha * v)
    return alpha * s * (1 - s)


def atan(v: torch.Tensor, alpha: float) -> torch.Tensor:
    """Derivative of arctan(pi/2 * alpha * v) / pi + 1/2: (alpha/2) / (1 + (pi/2 * alpha * v)^2)."""
    return (alpha / 2) / (1 + (math.pi / 2 * alpha * v) ** 2)


def rectangular(v: torch.Tensor, width: float) -> torch.Tensor:
    """1/width inside |v| < width/2, else 0: unit area."""
    return (v.abs() < width / 2).to(v.dtype) / width


def exponential(v: torch.Tensor, width: float) -> torch.Tensor:
    """exp(-|v| / width) / (2 * width): a Laplace bump of unit area."""
    return torch.exp(-v.abs() / width) / (2 * width)


def straight_through(v: torch.Tensor, width: float) -> torch.Tensor:
    """dH/dv := 1 everywhere (the width is ignored)."""
    return torch.ones_like(v)


# family -> (derivative, default width). Widths are the conventional ones: METHOD.md's ensemble uses
# triangle 1.0, sigmoid 4.0, atan 2.0.
SURROGATES: dict[str, tuple[Derivative, float]] = {
    "triangle": (triangle, 1.0),
    "sigmoid": (sigmoid, 4.0),
    "atan": (atan, 2.0),
    "rectangular": (rectangular, 1.0),
    "exponential": (exponential, 0.5),
    "straight_through": (straight_through, 1.0),
}
RATE_ESTIMATORS = ("bptr",)
# Backward rules that are not one fixed bump per step; the neuron implements them (spikeguard/snn/neuron.py).
HART_DEFAULT_GAMMA = 0.5
ADAPTIVE_ESTIMATORS = ("pdsg",)
ESTIMATOR_FAMILIES = tuple(SURROGATES) + RATE_ESTIMATORS + ("hart",) + ADAPTIVE_ESTIMATORS
_WIDTHLESS = RATE_ESTIMATORS + ADAPTIVE_ESTIMATORS
_DEFAULT_WIDTH = {**{family: default for family, (_, default) in SURROGATES.items()}, "hart": HART_DEFAULT_GAMMA}

# PDSG's sigma never drops below this (in units of the membrane potential): a channel whose membrane is
# constant would otherwise get a zero-width Gaussian, i.e. an infinite or vanishing gradient.
PDSG_SIGMA_FLOOR = 1e-2


def gaussian(v: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """exp(-v^2 / (2 sigma^2)) / (sqrt(2 pi) sigma): unit area (PDSG's surrogate)."""
    return torch.exp(-v * v / (2 * sigma * sigma)) / (math.sqrt(2 * math.pi) * sigma)


def membrane_sigma(membranes: torch.Tensor) -> torch.Tensor:
    """PDSG's width: the standard deviation (population, correction 0) of the membrane potential per
    channel, over time, batch and spatial positions, detached and floored at PDSG_SIGMA_FLOOR.

    ``membranes`` is [T, N, C, ...] (channel = dim 2 here, dim 1 of the folded [T*N, C, ...] tensor) and
    the result is shaped [C, 1, ...] to broadcast against one step's [N, C, ...]; for [T, N] (no channel
    dimension) the whole layer is one channel and the result is a scalar tensor.
    """
    membranes = membranes.detach()
    if membranes.dim() <= 2:
        return membranes.std(correction=0).clamp(min=PDSG_SIGMA_FLOOR)
    per_channel = membranes.transpose(0, 2).reshape(membranes.shape[2], -1)
    sigma = per_channel.std(dim=1, correction=0).clamp(min=PDSG_SIGMA_FLOOR)
    return sigma.reshape(-1, *([1] * (membranes.dim() - 3)))


@dataclass(frozen=True)
class Estimator:
    """A named backward estimator. ``width`` is the family's shape parameter (gamma or alpha)."""

    family: str
    width: float = 0.0

    @property
    def name(self) -> str:
        if self.family in _WIDTHLESS or self.family == "straight_through":
            return self.family
        return f"{self.family}:{self.width:g}"

    @property
    def is_rate(self) -> bool:
        return self.family in RATE_ESTIMATORS

    def derivative(self, v: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """d spike / d v at v = u - threshold. ``hart`` uses the triangle of its width; ``pdsg`` needs the
        ``sigma`` its layer measured in the forward pass (``membrane_sigma``)."""
        if self.family == "pdsg":
            if sigma is None:
                raise ValueError("the pdsg derivative needs the layer's membrane sigma")
            return gaussian(v, sigma)
        if self.family == "hart":
            return triangle(v, self.width)
        return SURROGATES[self.family][0](v, self.width)


def parse_estimator(spec: str | Estimator, width: float | None = None) -> Estimator:
    """``"triangle"``, ``"triangle:0.5"`` or ``("triangle", width=0.5)`` -> Estimator; UserError otherwise."""
    if isinstance(spec, Estimator):
        return spec
    family, _, text = str(spec).partition(":")
    if family not in ESTIMATOR_FAMILIES:
        raise UserError(f"unknown estimator '{spec}'; choose from {', '.join(ESTIMATOR_FAMILIES)}")
    if text:
        if width is not None:
            raise UserError(f"estimator '{spec}' gives its width twice")
        try:
            width = float(text)
        except ValueError:
            raise UserError(f"estimator '{spec}': width '{text}' is not a number") from None
    if family in _WIDTHLESS:
        if width is not None:
            raise UserError(f"estimator '{family}' takes no width")
        return Estimator(family)
    if width is None:
        width = _DEFAULT_WIDTH[family]
    if not math.isfinite(width) or width <= 0:
        raise UserError(f"estimator '{spec}': width must be a positive number, got {width}")
    return Estimator(family, float(width))


class SpikeFunction(torch.autograd.Function):
    """H(v) forward, estimator.derivative(v, sigma) backward."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, estimator: Estimator, sigma: torch.Tensor | None = None) -> torch.Tensor:
        ctx.save_for_backward(v, sigma)
        ctx.estimator = estimator
        return (v >= 0).to(v.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        v, sigma = ctx.saved_tensors
        return grad_output * ctx.estimator.derivative(v, sigma), None, None


def spike(v: torch.Tensor, estimator: Estimator, sigma: torch.Tensor | None = None) -> torch.Tensor:
    return SpikeFunction.apply(v, estimator, sigma)


def rate_slope(mean_input: torch.Tensor, tau: float, threshold: float) -> torch.Tensor:
    """Slope of firing rate against mean input current, the rate estimator's local derivative.

    For tau = 1 the published protocol (METHOD.md) uses 0.5 where the mean input lies in [0, 2] and 0
    elsewhere, i.e. the ramp rate = clamp(m / (2 * thr), 0, 1) for threshold thr = 1.
    Leaky case (tau < 1), derived in docs/estimators.md: at firing rate r a neuron whose membrane ramps
    from 0 to thr between spikes sits on average at thr / 2 and so leaks (1 - tau) * thr / 2 per step.
    Charge balance moves the ramp's onset from 0 to a = (1 - tau) * thr / 2 and keeps its slope:
    slope = 1 / (2 * thr) on [a, a + 2 * thr], 0 elsewhere. tau = 1 recovers the published rule.
    """
    onset = (1.0 - tau) * threshold / 2
    inside = (mean_input >= onset) & (mean_input <= onset + 2 * threshold)
    return inside.to(mean_input.dtype) / (2 * threshold)
