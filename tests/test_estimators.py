import math

import pytest
import torch

from spikeguard.errors import UserError
from spikeguard.snn import (
    ESTIMATOR_FAMILIES,
    PDSG_SIGMA_FLOOR,
    Estimator,
    IFNeuron,
    estimator,
    parse_estimator,
    set_estimator,
    spike,
    spiking_layers,
)

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
                                             ("straight_through", None, "straight_through"),
                                             ("hart", None, "hart:0.5"), ("hart:0.25", None, "hart:0.25"),
                                             ("hart", 2.0, "hart:2"), ("pdsg", None, "pdsg")])
def test_parse_estimator_names(spec, width, name):
    assert parse_estimator(spec, width).name == name


@pytest.mark.parametrize("spec", ["nope", "triangle:abc", "triangle:-1", "triangle:0", "bptr:2", "sigmoid:nan",
                                  "pdsg:1", "hart:0", "hart:inf", "hart:x"])
def test_parse_estimator_rejects(spec):
    with pytest.raises(UserError):
        parse_estimator(spec)


# HART on one neuron, T = 3, thr = 1, gamma = 0.5, loss L = sum_t w_t s_t with w = (1, -2, 3).
# Triangle of width 0.5: sg(v) = max(0, 0.5 - |v|) / 0.25. Worked by hand:
#   tau = 1:   u = 0.7, 1.2 (spike, reset), 0.9  -> v = -0.3, 0.2, -0.1 -> sg = 0.8, 1.2, 1.6
#              per-step w_t sg_t = 0.8, -2.4, 4.8 -> time mean 3.2 / 3 = 16/15 for every I_t
#   tau = 0.5: u = 0.7, 0.85, 1.325 (spike)      -> v = -0.3, -0.15, 0.325 -> sg = 0.8, 1.4, 0.7
#              per-step 0.8, -2.8, 2.1          -> time mean 0.1 / 3 = 1/30 for every I_t
@pytest.mark.parametrize("tau,spikes,grad", [(1.0, [0, 1, 0], 16 / 15), (0.5, [0, 0, 1], 1 / 30)])
def test_hart_matches_hand_computed_closed_form(tau, spikes, grad):
    currents = torch.tensor([[0.7], [0.5], [0.9]], dtype=torch.float64, requires_grad=True)
    weights = torch.tensor([[1.0], [-2.0], [3.0]], dtype=torch.float64)
    out = IFNeuron(tau=tau, estimator="hart:0.5", time_steps=3)(currents)
    assert out.squeeze(1).tolist() == spikes
    (g,) = torch.autograd.grad((weights * out).sum(), currents)
    torch.testing.assert_close(g, torch.full((3, 1), grad, dtype=torch.float64))
    # full BPTT with the same triangle differs: the membrane and the reset carry gradient across steps
    bptt = IFNeuron(tau=tau, estimator="triangle:0.5", time_steps=3)(currents)
    (g_bptt,) = torch.autograd.grad((weights * bptt).sum(), currents)
    assert not torch.allclose(g_bptt, g)


def test_hart_is_time_mean_of_detached_per_step_gradients():
    # the rule on many neurons with spikes and resets, against an independent detached-membrane loop
    T, n, tau, gamma = 5, 300, 0.8, 0.7
    g = torch.Generator().manual_seed(1)
    currents = (torch.rand(T, n, generator=g, dtype=torch.float64) * 1.6 - 0.2).requires_grad_(True)
    weights = torch.randn(T, n, generator=g, dtype=torch.float64)
    out = IFNeuron(tau=tau, estimator=f"hart:{gamma}", time_steps=T)(currents.reshape(T * n)).reshape(T, n)
    (grad,) = torch.autograd.grad((weights * out).sum(), currents)
    u, per_step = torch.zeros(n, dtype=torch.float64), []
    for t in range(T):
        u = tau * u + currents[t].detach()
        per_step.append(weights[t] * torch.clamp(gamma - (u - 1).abs(), min=0) / gamma**2)
        u = torch.where(u >= 1, 0.0, u)
    expected = torch.stack(per_step).mean(0).expand(T, n)
    torch.testing.assert_close(grad, expected)
    assert grad.abs().sum() > 0


def test_pdsg_gaussian_width_follows_planted_channel_std():
    # T = 1: the membrane before reset is the input current itself, so the planted distribution is the
    # membrane distribution. Channel 0: std 0.2, channel 1: std 2.0, channel 2: constant (floored sigma).
    g = torch.Generator().manual_seed(2)
    n = 4000
    planted = torch.stack([1 + 0.2 * torch.randn(n, generator=g, dtype=torch.float64),
                           1 + 2.0 * torch.randn(n, generator=g, dtype=torch.float64),
                           torch.full((n,), 0.995, dtype=torch.float64)], dim=1)
    x = planted.clone().requires_grad_(True)
    weights = torch.randn(n, 3, generator=g, dtype=torch.float64)
    out = IFNeuron(estimator="pdsg", time_steps=1)(x)
    assert torch.equal(out.detach(), (planted >= 1).double())
    (grad,) = torch.autograd.grad((weights * out).sum(), x)
    sigma = planted.std(dim=0, correction=0).clamp(min=PDSG_SIGMA_FLOOR)
    assert sigma[0] == pytest.approx(0.2, rel=0.05) and sigma[1] == pytest.approx(2.0, rel=0.05)
    assert sigma[2] == PDSG_SIGMA_FLOOR
    v = planted - 1
    expected = weights * torch.exp(-v**2 / (2 * sigma**2)) / (math.sqrt(2 * math.pi) * sigma)
    torch.testing.assert_close(grad, expected)


def test_pdsg_sigma_is_per_channel_over_time_batch_and_space():
    # 4-D input, T = 3, currents too small to spike: the membrane before reset is the running sum of the
    # currents, and with the reset detached BPTT gives dL/dI_t = sum_{t' >= t} w_t' sg(v_t') exactly.
    T, n, C = 3, 6, 2
    g = torch.Generator().manual_seed(3)
    currents = torch.rand(T, n, C, 4, 4, generator=g, dtype=torch.float64) * 0.3
    currents[:, :, 1] = currents[:, :, 1] * 3 - 0.6  # channel 1 spread wider
    currents.requires_grad_(True)
    weights = torch.randn(T, n, C, 4, 4, generator=g, dtype=torch.float64)
    neuron = IFNeuron(estimator="pdsg", time_steps=T, detach_reset=True)
    out = neuron(currents.reshape(T * n, C, 4, 4)).reshape(T, n, C, 4, 4)
    assert out.sum() == 0
    (grad,) = torch.autograd.grad((weights * out).sum(), currents)
    membrane = currents.detach().cumsum(0)
    sigma = torch.stack([membrane[:, :, c].std(correction=0) for c in range(C)]).reshape(1, 1, C, 1, 1)
    assert sigma[0, 0, 1] > 2 * sigma[0, 0, 0]
    local = weights * torch.exp(-(membrane - 1) ** 2 / (2 * sigma**2)) / (math.sqrt(2 * math.pi) * sigma)
    expected = local.flip(0).cumsum(0).flip(0)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("family", ESTIMATOR_FAMILIES)
def test_every_estimator_keeps_forward_and_gives_a_gradient(tiny_model, digits_batch, family):
    x, y = digits_batch
    tiny_model.eval()
    with torch.no_grad():
        reference = tiny_model(x)
    with estimator(tiny_model, family) as est:
        assert est.family == family
        xi = x.clone().requires_grad_(True)
        out = tiny_model(xi)
        (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(out, y), xi)
    assert torch.equal(out.detach(), reference)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_new_families_select_by_name(tiny_model):
    assert {"hart", "pdsg"} <= set(ESTIMATOR_FAMILIES)
    with estimator(tiny_model, "hart", gamma=0.25) as est:
        assert est == Estimator("hart", 0.25) and est.name == "hart:0.25"
    assert set_estimator(tiny_model, "pdsg").name == "pdsg"
    assert all(layer.estimator.name == "pdsg" for layer in spiking_layers(tiny_model))


# ---------------------------------------------------------------- adding an estimator from outside the package

def raised_cosine(v, width):
    """(1 + cos(pi v / width)) / (2 width) on |v| < width, else 0: unit area (the new surrogate shape)."""
    inside = (v.abs() < width).to(v.dtype)
    return inside * (1 + torch.cos(math.pi * v / width)) / (2 * width)


def raised_cosine_step(v, width):
    """The smooth step whose derivative raised_cosine is: 0, a half-cosine ramp on [-width, width], 1."""
    u = v.clamp(-width, width)
    return 0.5 + 0.5 * (u / width + torch.sin(math.pi * u / width) / math.pi)


@pytest.fixture
def cosine():
    from spikeguard.snn import register_estimator, unregister_estimator

    register_estimator("cosine", derivative=raised_cosine, default_width=1.0, description="raised cosine")
    try:
        yield
    finally:
        unregister_estimator("cosine")


def test_registered_surrogate_shape_matches_autograd_of_its_step(cosine, tiny_model, digits_batch):
    from spikeguard.snn import ESTIMATOR_FAMILIES, SURROGATES

    est = parse_estimator("cosine:2")
    assert est == Estimator("cosine", 2.0) and est.name == "cosine:2" and parse_estimator("cosine").width == 1.0
    assert "cosine" in ESTIMATOR_FAMILIES and SURROGATES["cosine"] == (raised_cosine, 1.0)
    # the hand-written backward against autograd of the smooth function it differentiates
    # (SpikingJelly's check_manual_grad idea), at several widths, on both sides of the support
    for width in (0.5, 1.0, 2.0):
        v = torch.linspace(-3, 3, 601, dtype=torch.float64, requires_grad=True)
        (manual,) = torch.autograd.grad(spike(v, parse_estimator("cosine", width)).sum(), v)
        (smooth,) = torch.autograd.grad(raised_cosine_step(v, width).sum(), v)
        torch.testing.assert_close(manual, smooth)
        assert manual.abs().sum() > 0
    # a model under it: same forward, a finite gradient that differs from the triangle's
    x, y = digits_batch
    tiny_model.eval()
    grads = {}
    for name in ("triangle", "cosine"):
        with estimator(tiny_model, name, width=2) as chosen:
            assert all(layer.estimator == chosen for layer in spiking_layers(tiny_model))
            xi = x.clone().requires_grad_(True)
            out = tiny_model(xi)
            (grads[name],) = torch.autograd.grad(torch.nn.functional.cross_entropy(out, y), xi)
            grads[name + " forward"] = out.detach()
    assert torch.equal(grads["cosine forward"], grads["triangle forward"])
    assert torch.isfinite(grads["cosine"]).all() and grads["cosine"].abs().sum() > 0
    assert not torch.allclose(grads["cosine"], grads["triangle"])


def test_unregistered_estimator_is_unknown_again(cosine):
    from spikeguard.snn import unregister_estimator

    unregister_estimator("cosine")
    with pytest.raises(UserError, match="unknown estimator 'cosine:2'"):
        parse_estimator("cosine:2")


def test_a_new_rule_with_its_own_fire_runs_through_the_neuron():
    from spikeguard.snn import register_estimator, unregister_estimator

    @register_estimator("identity_ste", kind="rate", description="d spike_t / d I_t := 1 (test rule)")
    class IdentityStraightThrough:
        """Spikes forward; backward, each step's current gets its own spike's gradient unchanged."""

        calls = 0

        def fire(self, est, neuron, currents):
            IdentityStraightThrough.calls += 1
            with torch.no_grad():
                spikes, _ = neuron.integrate(currents, est)
            return spikes + (currents - currents.detach())

        def derivative(self, est, v, sigma=None):
            return torch.ones_like(v)

    try:
        est = parse_estimator("identity_ste")
        assert est.name == "identity_ste" and est.kind == "rate" and est.is_rate
        with pytest.raises(UserError, match="takes no width"):
            parse_estimator("identity_ste:1")
        T, n = 4, 50
        g = torch.Generator().manual_seed(4)
        currents = (torch.rand(T, n, generator=g, dtype=torch.float64) * 1.5).requires_grad_(True)
        weights = torch.randn(T, n, generator=g, dtype=torch.float64)
        out = IFNeuron(estimator=est, time_steps=T)(currents.reshape(T * n)).reshape(T, n)
        reference = IFNeuron(estimator="triangle", time_steps=T)(currents.detach().reshape(T * n)).reshape(T, n)
        assert torch.equal(out.detach(), reference) and IdentityStraightThrough.calls == 1
        (grad,) = torch.autograd.grad((weights * out).sum(), currents)
        torch.testing.assert_close(grad, weights)
    finally:
        unregister_estimator("identity_ste")
