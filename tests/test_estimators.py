import math

import pytest
import torch

from spikeguard.errors import UserError
from spikeguard.snn import IFNeuron, parse_estimator, spike

V = torch.linspace(-3, 3, 601, dtype=torch.float64)

# Each formula written out independently of the implementation.
FORMULAS = {
    "triangle:1": lambda v: torch.clamp(1 - v.abs(), min=0),
    "triangle:0.5": lambda v: torch.clamp(0.5 - v.abs(), min=0) / 0.25,
    "sigmoid:4": lambda v: 4 * torch.exp(-4 * v) / (1 + torch.exp(-4 * v)) ** 2,
    "atan:2": lambda v: 1 / (1 + (math.pi * v) ** 2),
    "rectangular:1": lambda v: (v.abs() < 0.5).double(),
    "rectangular:2": lambda v: (v.abs() < 1).double() / 2,
    "exponential:0.5": lambda v: torch.exp(-2 * v.abs()),
    "straight_through": lambda v: torch.ones_like(v),
}


@pytest.mark.parametrize("name", FORMULAS)
def test_surrogate_derivative_matches_formula(name):
    v = V.clone().requires_grad_(True)
    out = spike(v, parse_estimator(name))
    assert torch.equal(out.detach(), (V >= 0).double())
    (grad,) = torch.autograd.grad(out.sum(), v)
    torch.testing.assert_close(grad, FORMULAS[name](V))


@pytest.mark.parametrize("name", ["triangle:0.7", "sigmoid:3", "atan:1.5", "rectangular:0.8", "exponential:0.3"])
def test_surrogates_have_unit_area(name):
    fine = torch.linspace(-60, 60, 1_200_001, dtype=torch.float64)
    area = torch.trapezoid(parse_estimator(name).derivative(fine), fine).item()
    # atan's tails are heavy: beyond |v| = 60 lies about 2 / (pi^2 * alpha * 60) of its mass
    assert area == pytest.approx(1.0, abs=6e-3 if name.startswith("atan") else 2e-3)


def rate_closed_form(mean_input, tau, thr=1.0):
    onset = (1 - tau) * thr / 2
    return torch.where((mean_input >= onset) & (mean_input <= onset + 2 * thr), 1 / (2 * thr), 0.0)


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_rate_estimator_matches_closed_form(tau):
    T, n = 6, 200
    g = torch.Generator().manual_seed(0)
    currents = (torch.rand(T, n, generator=g, dtype=torch.float64) * 4 - 1).requires_grad_(True)
    weights = torch.randn(T, n, generator=g, dtype=torch.float64)
    neuron = IFNeuron(tau=tau, estimator="bptr", time_steps=T)
    spikes = neuron(currents.reshape(T * n)).reshape(T, n)
    (grad,) = torch.autograd.grad((weights * spikes).sum(), currents)
    expected = rate_closed_form(currents.detach().mean(0), tau) * weights.mean(0)
    torch.testing.assert_close(grad, expected.expand(T, n))
    # tau = 1 is the published rule: slope 0.5 on mean input in [0, 2]
    if tau == 1.0:
        assert set(rate_closed_form(torch.tensor([-0.1, 0.0, 1.0, 2.0, 2.1]), 1.0).tolist()) == {0.0, 0.5}


def test_rate_estimator_forward_equals_surrogate_forward():
    T = 5
    x = torch.randn(T * 7, 3)
    assert torch.equal(IFNeuron(estimator="bptr", time_steps=T)(x), IFNeuron(estimator="sigmoid:4", time_steps=T)(x))


@pytest.mark.parametrize("spec,width,name", [("triangle", None, "triangle:1"), ("sigmoid:2.5", None, "sigmoid:2.5"),
                                             ("atan", 3.0, "atan:3"), ("bptr", None, "bptr"),
                                             ("straight_through", None, "straight_through")])
def test_parse_estimator_names(spec, width, name):
    assert parse_estimator(spec, width).name == name


@pytest.mark.parametrize("spec", ["nope", "triangle:abc", "triangle:-1", "triangle:0", "bptr:2", "sigmoid:nan"])
def test_parse_estimator_rejects(spec):
    with pytest.raises(UserError):
        parse_estimator(spec)
