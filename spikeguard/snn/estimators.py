"""Backward estimators: how a gradient passes through the non-differentiable spike.

A spike is H(v) with v = u - threshold. Its forward pass never changes; its backward pass is a choice.
Four kinds of choice live here:

* surrogate estimators replace dH/dv by a smooth bump sg(v) at every time step (BPTT);
* the rate estimator (BPTR / RGA) treats a layer as a map from mean input current to firing rate and
  passes the slope of that map, averaged over time (see ``rate_slope``);
* ``hart`` detaches the membrane between time steps, takes the triangle surrogate at each step and hands
  every step's input the time-mean of those per-step gradients (temporal and rate information mixed);
* ``pdsg`` is a Gaussian surrogate whose width is the per-channel standard deviation of the membrane
  potential measured in the forward pass (see ``membrane_sigma``);
* ``threshold_triangle`` is the triangle whose half-width is its width times the layer's threshold: scale-free,
  so multiplying a layer's threshold and the current feeding it by the same factor changes nothing in its
  input gradient's direction (a fixed-width surrogate is exactly zero there on almost every neuron).

Each estimator has a stable name, ``family`` or ``family:width`` (``triangle:1.0``, ``sigmoid:4``,
``bptr``, ``hart:0.5``, ``pdsg``), parsed by ``parse_estimator``. The names, widths and kinds are registered
in spikeguard/snn/registry.py (readable without PyTorch); the rules, what each family does in a layer's
forward and backward pass, are here. docs/estimators.md states the rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from spikeguard.snn import local_derivatives
from spikeguard.snn.registry import ESTIMATORS, Estimator

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


def fast_sigmoid(v: torch.Tensor, slope: float) -> torch.Tensor:
    """1 / (slope |v| + 1)^2: snnTorch's fast_sigmoid surrogate (the derivative of SuperSpike's fast
    sigmoid); not normalised, its area is 2 / slope."""
    return 1.0 / (slope * v.abs() + 1.0) ** 2


def straight_through(v: torch.Tensor, width: float) -> torch.Tensor:
    """dH/dv := 1 everywhere (the width is ignored)."""
    return torch.ones_like(v)


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


class SpikeFunction(torch.autograd.Function):
    """H(v) forward, estimator.derivative(v, sigma) backward."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, estimator: Estimator, sigma: torch.Tensor | None = None) -> torch.Tensor:
        ctx.save_for_backward(v, sigma)
        ctx.estimator, ctx.layer = estimator, local_derivatives.RECORDER.layer
        return (v >= 0).to(v.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        v, sigma = ctx.saved_tensors
        local = ctx.estimator.derivative(v, sigma)
        local_derivatives.RECORDER.add(ctx.layer, local)
        return grad_output * local, None, None


def spike(v: torch.Tensor, estimator: Estimator, sigma: torch.Tensor | None = None) -> torch.Tensor:
    return SpikeFunction.apply(v, estimator, sigma)


def rate_slope(mean_input: torch.Tensor, tau: float, threshold: float) -> torch.Tensor:
    """Slope of firing rate against mean input current, the rate estimator's local derivative.

    For tau = 1 the published protocol (docs/method.md) uses 0.5 where the mean input lies in [0, 2] and 0
    elsewhere, i.e. the ramp rate = clamp(m / (2 * thr), 0, 1) for threshold thr = 1.
    Leaky case (tau < 1), derived in docs/estimators.md: at firing rate r a neuron whose membrane ramps
    from 0 to thr between spikes sits on average at thr / 2 and so leaks (1 - tau) * thr / 2 per step.
    Charge balance moves the ramp's onset from 0 to a = (1 - tau) * thr / 2 and keeps its slope:
    slope = 1 / (2 * thr) on [a, a + 2 * thr], 0 elsewhere. tau = 1 recovers the published rule.
    """
    onset = (1.0 - tau) * threshold / 2
    inside = (mean_input >= onset) & (mean_input <= onset + 2 * threshold)
    return inside.to(mean_input.dtype) / (2 * threshold)


class _TimeMeanGradient(torch.autograd.Function):
    """Spikes forward; backward, every step's input current gets the same time-mean gradient
    dL/dI_t = mean_t' slope_t' * dL/ds_t'.

    Two estimators are this rule with different slopes, both written out in docs/estimators.md:
    BPTR / RGA (slope = phi'(mean_t I_t), the same at every step, so dL/dI_t = phi'(m) * mean_t' dL/ds_t':
    the spiking network differentiates like the rate network it approximates) and HART (slope_t = the
    triangle surrogate at step t's membrane, with no gradient through the membrane from step to step).
    """

    @staticmethod
    def forward(ctx, currents: torch.Tensor, spikes: torch.Tensor, slope: torch.Tensor):
        ctx.save_for_backward(slope)
        ctx.layer = local_derivatives.RECORDER.layer
        return spikes.clone()

    @staticmethod
    def backward(ctx, grad_spikes: torch.Tensor):
        (slope,) = ctx.saved_tensors
        local_derivatives.RECORDER.add(ctx.layer, slope)
        grad_currents = (slope * grad_spikes).mean(0).expand_as(grad_spikes)
        return grad_currents, None, None


# ---------------------------------------------------------------- the rules (see spikeguard/snn/registry.py)

class Surrogate:
    """A fixed bump ``shape(v, width)`` as d spike / d v at every step, the gradient flowing through the
    membrane and the reset across steps (BPTT)."""

    def __init__(self, shape: Derivative):
        self.shape = shape

    def derivative(self, estimator: Estimator, v: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        return self.shape(v, estimator.width)

    def fire(self, estimator: Estimator, neuron, currents: torch.Tensor) -> torch.Tensor:
        spikes, _ = neuron.integrate(currents, estimator)
        return spikes


TRIANGLE = Surrogate(triangle)
SIGMOID = Surrogate(sigmoid)
ATAN = Surrogate(atan)
RECTANGULAR = Surrogate(rectangular)
EXPONENTIAL = Surrogate(exponential)
FAST_SIGMOID = Surrogate(fast_sigmoid)
STRAIGHT_THROUGH = Surrogate(straight_through)


class RateEstimator:
    """BPTR / RGA: every step's current gets rate_slope(mean current) times the time-mean output gradient."""

    def derivative(self, estimator: Estimator, v: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        raise ValueError(f"estimator '{estimator.name}' has no per-step derivative (it is a rate rule)")

    def fire(self, estimator: Estimator, neuron, currents: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            spikes, _ = neuron.integrate(currents, estimator)
            slope = rate_slope(currents.mean(0), neuron.tau, neuron.threshold)
        return _TimeMeanGradient.apply(currents, spikes, slope)


class Hart:
    """HART: the membrane detached between steps, so d s_t / d I_t = sg(u_t - thr) with the triangle of the
    estimator's width; every step's current gets the time mean of those per-step gradients."""

    def derivative(self, estimator: Estimator, v: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        return triangle(v, estimator.width)

    def fire(self, estimator: Estimator, neuron, currents: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            spikes, membranes = neuron.integrate(currents, estimator, record=True)
            slope = estimator.derivative(membranes - neuron.threshold)
        return _TimeMeanGradient.apply(currents, spikes, slope)


class Pdsg:
    """PDSG: a Gaussian surrogate whose width is the layer's per-channel membrane std (membrane_sigma)."""

    def derivative(self, estimator: Estimator, v: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        if sigma is None:
            raise ValueError("the pdsg derivative needs the layer's membrane sigma")
        return gaussian(v, sigma)

    def fire(self, estimator: Estimator, neuron, currents: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and currents.requires_grad):
            spikes, _ = neuron.integrate(currents, estimator)
            return spikes
        # sigma needs the membrane of every step before the first surrogate is used, so a first pass
        # measures it and a second, identical forward pass carries the gradient.
        with torch.no_grad():
            _, membranes = neuron.integrate(currents, estimator, record=True)
        spikes, _ = neuron.integrate(currents, estimator, sigma=membrane_sigma(membranes))
        return spikes


class ThresholdRelative:
    """A surrogate shape whose width is the estimator's width times the layer's threshold, at every step
    (BPTT): ``threshold_triangle:1`` is the triangle of half-width 1 x threshold. Scaling a layer's threshold
    and its input current by k scales v by k and the bump's width by k, so d spike / d current is the same
    function of the unscaled v (a fixed-width bump would be exactly zero wherever |v| > width, which for
    large k is almost everywhere). ``sigma`` is the layer's threshold, a float or a tensor broadcasting
    against v (snnTorch keeps it as one)."""

    def __init__(self, bump: Callable[[torch.Tensor, Any], torch.Tensor]):
        self.bump = bump  # not ``shape``: it is no fixed-width surrogate of SURROGATES (its width is a tensor here)

    def derivative(self, estimator: Estimator, v: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        if sigma is None:
            raise ValueError(f"the {estimator.family} derivative needs the layer's threshold")
        return self.bump(v, estimator.width * sigma)

    def fire(self, estimator: Estimator, neuron, currents: torch.Tensor) -> torch.Tensor:
        threshold = torch.as_tensor(neuron.threshold, dtype=currents.dtype, device=currents.device)
        spikes, _ = neuron.integrate(currents, estimator, sigma=threshold)
        return spikes


THRESHOLD_TRIANGLE = ThresholdRelative(triangle)


def __getattr__(name: str) -> Any:
    if name == "SURROGATES":  # family -> (derivative, default width) of every registered surrogate shape
        surrogates = {}
        for family in ESTIMATORS.names(kind="surrogate"):
            rule = Estimator(family).rule
            shape = getattr(rule, "shape", None)
            if shape is not None:
                surrogates[family] = (shape, ESTIMATORS.facts(family)["default_width"])
        return surrogates
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
