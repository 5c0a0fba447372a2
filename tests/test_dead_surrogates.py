"""Dead surrogates (issue 21): the per-layer measure of exactly-zero surrogate derivatives, the flag when a
member's input gradient is zero on most samples, and the scale-free member threshold_triangle that keeps
`quick` within 5 points of a trick-aware attack on an SNN whose thresholds and currents are scaled up."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ecosystem_models import JellyCSNN, TorchCSNN, reset, train
from torch import nn
from traps import TRICK_AWARE_MEMBERS, dead_zone, trick_aware

from spikeguard.evaluation import bank, evaluate_model
from spikeguard.evaluation.dead_surrogates import dead_flag
from spikeguard.report.blocks import Table
from spikeguard.report.gradients import gradient_blocks
from spikeguard.schema import FlagName
from spikeguard.snn import IFNeuron
from spikeguard.snn.dead_zone import dead_fractions

# the pre-issue quick members with a compact surrogate (atan and fast_sigmoid have unbounded support: they
# are tiny but not exactly zero on the trap, see docs/estimators.md)
COMPACT = ("triangle:1", "hart:0.25", "triangle:0.5")
assert set(COMPACT) < set(TRICK_AWARE_MEMBERS) and "threshold_triangle:1" in bank.QUICK
EPS = 0.15


class OneLayer(nn.Module):
    """The input as the current of one IFNeuron layer at each of T steps; output: the mean spike."""

    def __init__(self, threshold: float, estimator: str, steps: int = 2):
        super().__init__()
        self.neuron = IFNeuron(threshold=threshold, estimator=estimator, time_steps=steps)

    def forward(self, x):
        T = self.neuron.time_steps
        return self.neuron(x.repeat(T, 1)).reshape(T, *x.shape).mean(0)


def test_dead_fraction_matches_a_hand_computation():
    # membranes (T = 2, hard reset), threshold 1: neuron a 0.5, 1.0; b -0.2, -0.4; c 1.5 (fires), 1.5;
    # d 2.5 (fires), 2.5. triangle:1 is zero where |u - 1| >= 1: b twice and d twice, 4 of 8.
    currents = torch.tensor([[0.5, -0.2, 1.5, 2.5]])
    assert dead_fractions(OneLayer(1.0, "triangle:1"), currents)["layers"] == {"neuron": 0.5}
    # threshold and currents times 4: triangle:1 keeps only a's second step (u = 4) alive, 7 of 8 dead;
    # the threshold-relative triangle sees the unscaled layer again
    assert dead_fractions(OneLayer(4.0, "triangle:1"), 4 * currents)["layers"] == {"neuron": 0.875}
    assert dead_fractions(OneLayer(4.0, "threshold_triangle:1"), 4 * currents)["layers"] == {"neuron": 0.5}


def test_dead_zone_keeps_every_logit(tiny_model, digits_batch):
    x, _ = digits_batch
    with torch.no_grad():
        assert torch.equal(dead_zone(tiny_model)(x), tiny_model(x))


def test_quick_on_the_dead_zone_trap_is_within_5_points_of_a_trick_aware_attack(tiny_model, digits):
    trap = dead_zone(tiny_model)
    record = evaluate_model(trap, digits.test, 10, suite="quick", eps=EPS, n=32, seed=0, progress=False).record
    zero = record.gradient_check.zero_gradient_fraction
    assert all(zero[m] > 0.5 for m in COMPACT) and zero["threshold_triangle:1"] == 0
    (flag,) = [f for f in record.flags if f.name == FlagName.DEAD_SURROGATE]
    assert all(m in flag.detail.split("; members that still see")[0] for m in COMPACT)
    assert not flag.untrusting and "threshold_triangle:1" in flag.detail
    probe = record.probes.dead_surrogates
    assert probe["members"]["triangle:1"]["input_gradient_zero"] == zero["triangle:1"]
    assert min(probe["members"]["triangle:1"]["layers"].values()) > 0.99  # every layer dead at this scale
    assert max(probe["members"]["threshold_triangle:1"]["layers"].values()) < 0.9
    x = torch.stack([digits.test[i][0] for i in range(32)])
    y = torch.tensor([int(digits.test[i][1]) for i in range(32)])
    reached = trick_aware(tiny_model, x, y, EPS, steps=30).float().mean().item()
    assert record.headline.accuracy <= reached + 0.05


def test_an_honest_snn_raises_no_dead_surrogate_though_half_its_derivatives_are_zero(tiny_model, digits):
    record = evaluate_model(tiny_model, digits.test, 10, suite="quick", eps=EPS, n=32, seed=0, progress=False).record
    assert FlagName.DEAD_SURROGATE not in record.flag_names
    layers = record.probes.dead_surrogates["members"]["triangle:1"]["layers"]
    assert 0.2 < layers["body.2"] < 0.8  # layer-level zeros are normal
    (table,) = [b for b in gradient_blocks(record, "tiny") if isinstance(b, Table)]
    row = next(r for r in table.rows if r[0] == "triangle:1")
    assert row[1] == "0.0" and f"body.2 {100 * layers['body.2']:.1f}" in row[2]
    assert "not measured" in next(r for r in table.rows if r[0] == "ann")[2]


def test_the_flag_names_a_zero_after_live_layers_as_another_cause():
    members = {"triangle:1": {"layers": {"a": 0.999, "b": 1.0}}, "atan:2": {"layers": {"a": 0.0, "b": 0.0}}}
    (flag,) = dead_flag({"triangle:1": 0.9, "atan:2": 0.6}, members)
    surrogate, elsewhere = flag.detail.split("; under ")[1:3]
    assert surrogate.startswith("triangle:1 a spiking layer") and "folded BatchNorm" in surrogate
    assert elsewhere.startswith("atan:2 no spiking layer is dead") and "saturated softmax" in elsewhere
    assert dead_flag({"triangle:1": 0.5, "atan:2": 0.1}, members) == []  # most means over half


def _input_gradient(model, member, x, y):
    with bank.under(model, member) as target:
        xi = x.clone().requires_grad_(True)
        reset(model)
        F.cross_entropy(target(xi), y).backward()
    return xi.grad


@pytest.mark.parametrize("library", ["snntorch", "spikingjelly"])
def test_the_scale_free_member_drives_library_neurons_with_scaled_thresholds(digits_tensors, library):
    (x, y), (xt, yt) = digits_tensors
    torch.manual_seed(0)
    model = train(TorchCSNN() if library == "snntorch" else JellyCSNN(), x[:256], y[:256], epochs=1)
    base = _input_gradient(model, "threshold_triangle:1", xt[:16], yt[:16])
    k = 2.0 ** 10
    with torch.no_grad():  # every threshold and the affine layer feeding it times k: the same spikes
        feeding = None
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
                feeding = module
            elif hasattr(module, "v_threshold") or hasattr(module, "spike_grad"):
                feeding.weight.mul_(k)
                if feeding.bias is not None:
                    feeding.bias.mul_(k)
                if hasattr(module, "v_threshold"):
                    module.v_threshold *= k
                else:
                    module.threshold.mul_(k)
    scaled = _input_gradient(model, "threshold_triangle:1", xt[:16], yt[:16])
    fixed = _input_gradient(model, "triangle:1", xt[:16], yt[:16])
    assert base.abs().sum() > 0
    torch.testing.assert_close(scaled, base, rtol=1e-3, atol=1e-6 * base.abs().max().item())
    assert (fixed.flatten(1) == 0).all(1).float().mean() > 0.5  # the fixed width is dead at this scale
