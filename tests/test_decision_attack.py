"""The decision-based attack (RayS, spikeguard/attacks/decision.py) and the flat-outputs probe
(spikeguard/evaluation/flat_outputs.py): on a flat-output liar the attack alone comes within 5 points of the
trick-aware attack, its examples stay in the eps ball and [0, 1], and the probe fires on flat outputs only."""

from __future__ import annotations

import pytest
import torch
import traps
from lying_models import honest_classifier
from torch import nn

from spikeguard.attacks.decision import rays
from spikeguard.attacks.registry import attack_kind
from spikeguard.evaluation.flat_outputs import THRESHOLD, flat_flag, probe_flat_outputs
from spikeguard.evaluation.runner import craft
from spikeguard.evaluation.suites import AttackSpec, load_suite
from spikeguard.schema import FlagName

EPS = 0.15


class Quantised(nn.Module):
    """Quantised scores: the base's softmax rounded to steps of 0.25 (the decisions of the base, ties aside)."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    def forward(self, x):
        return torch.round(torch.softmax(self.base(x), 1) * 4) / 4


class Frames(nn.Module):
    """Event frames [N, T, C, H, W] -> the image model (their mean over time)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, frames):
        return self.model(frames.mean(1))


@pytest.fixture(scope="module")
def probe_inputs(digits_tensors):
    _, (x, y) = digits_tensors
    return x[:64], y[:64]


def test_rays_alone_comes_within_five_points_of_the_trick_aware_attack_on_a_flat_liar(tiny_model, digits_tensors):
    _, (x, y) = digits_tensors
    x, y = x[:32], y[:32]
    liar = traps.FlatLiar(tiny_model)
    # a real trick-aware attack (PGD under the base's own gradient sources, CE and margin), fewer steps for time
    standing = traps.trick_aware(tiny_model, x, y, EPS, steps=50, members=("triangle:1", "atan:2", "bptr", "ann"))
    trick_aware = standing.float().mean().item()
    x_adv = rays(liar, x, y, EPS, queries=3000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        decided = (liar(x_adv).argmax(1) == y).float().mean().item()
    assert trick_aware <= 0.1  # the attacker who knows the trick breaks almost everything
    assert decided <= trick_aware + 0.05, (decided, trick_aware)
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


def test_rays_examples_stay_in_the_ball_and_its_budget_is_kept(tiny_model, digits_tensors):
    _, (x, y) = digits_tensors
    x, y = x[:8], y[:8]
    calls = []

    class Counting(nn.Module):
        def forward(self, inputs):
            calls.append(len(inputs))
            return traps.FlatLiar(tiny_model)(inputs)

    assert attack_kind("rays").gradient is False and not attack_kind("rays").library
    for eps in (0.02, 0.3):
        calls.clear()
        x_adv = rays(Counting(), x, y, eps, queries=50, generator=torch.Generator().manual_seed(1))
        assert (x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
        assert sum(calls) <= 50 * len(x)  # at most `queries` queries per sample
    frames = x[:, None].expand(-1, 2, -1, -1, -1).contiguous()  # [N, T, C, H, W] event frames
    out = craft(AttackSpec("rays", "rays", {"queries": 30}, ()), Frames(tiny_model), frames, y, 0.1, 1,
                torch.Generator().manual_seed(0), 10)  # through the runner, as a suite runs it
    assert out.shape == frames.shape and (out - frames).abs().max() <= 0.1 + 1e-6


def test_rays_is_reproducible_and_leaves_the_global_generator_alone(tiny_model, digits_tensors):
    _, (x, y) = digits_tensors
    liar = traps.FlatLiar(tiny_model)
    torch.manual_seed(3)
    before = torch.rand(1)
    torch.manual_seed(3)
    runs = [rays(liar, x[:6], y[:6], EPS, queries=40, generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(runs[0], runs[1]) and torch.equal(torch.rand(1), before)

    class Noisy(nn.Module):  # a stochastic model: EoT draws from torch's generator, forked by the attack
        def forward(self, inputs):
            return liar(inputs) + torch.randn(len(inputs), 10)

    torch.manual_seed(3)
    noisy = [rays(Noisy(), x[:6], y[:6], EPS, queries=40, draws=3, generator=torch.Generator().manual_seed(5))
             for _ in range(2)]
    assert torch.equal(noisy[0], noisy[1]) and torch.equal(torch.rand(1), before)
    assert (noisy[0] - x[:6]).abs().max() <= EPS + 1e-6


def test_flat_outputs_probe_fires_on_flat_outputs_only(tiny_model, probe_inputs, digits_tensors):
    x, _ = probe_inputs
    (train_x, train_y), _ = digits_tensors
    ann = honest_classifier(train_x, train_y, epochs=2)
    reports = {name: probe_flat_outputs(model, x, EPS, seed=0) for name, model in
               {"snn": tiny_model, "ann": ann, "liar": traps.FlatLiar(tiny_model),
                "quantised": Quantised(tiny_model)}.items()}
    for honest in ("snn", "ann"):
        assert reports[honest]["flat_fraction"] <= THRESHOLD / 2 and not flat_flag(reports[honest]), reports[honest]
    for flat in ("liar", "quantised"):
        assert reports[flat]["flat_fraction"] > THRESHOLD, reports[flat]
        assert [f.name for f in flat_flag(reports[flat])] == [FlagName.FLAT_OUTPUTS]
    assert reports["liar"]["quantised"] and reports["quantised"]["quantised"] and not reports["snn"]["quantised"]
    assert reports["snn"]["samples"] == 64 and len(reports["snn"]["radii"]) == 1


def test_strong_runs_the_decision_attack_on_survivors_and_quick_does_not():
    strong = {s.attack: s for s in load_suite("strong").attacks}
    assert strong["rays"].params["survivors_only"] and strong["rays"].params["queries"] >= 1000
    assert "rays" not in {s.attack for s in load_suite("quick").attacks}


def test_a_model_whose_output_ignores_its_input_is_not_flagged(probe_inputs):
    x, _ = probe_inputs

    class Constant(nn.Module):
        def forward(self, inputs):
            return torch.zeros(len(inputs), 10) + torch.arange(10.0)

    report = probe_flat_outputs(Constant(), x, EPS, seed=0)
    assert report["flat_fraction"] == 1.0 and report["constant_outputs"] and not flat_flag(report)
