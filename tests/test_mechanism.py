"""The mechanism's quantities against hand computations: a linear model whose margin gradient is known, a
two-layer SNN whose surrogate derivatives are known, the gap in margin units, the flip distance, the
training's penalty probe for every defense."""

import json
import math

import pytest
import torch
from torch import nn

from spikeguard.analysis.analyze import fallback_attacks
from spikeguard.analysis.gap import gap_at_eps, summarize_gap
from spikeguard.analysis.mechanism import (
    decomposition,
    flip_distance,
    flip_summary,
    measure_batch,
    rank_agreement,
    summarize_point,
    surrogate_zeros,
)
from spikeguard.config import config_from_dict
from spikeguard.defenses.sparsity import penalty_probe
from spikeguard.snn import IFNeuron
from spikeguard.training import train


def linear(weight: list[list[float]], bias: list[float]) -> nn.Module:
    """logits = W x + b (float64): the margin's gradient against rival k is W[y] - W[k], exactly."""
    lin = nn.Linear(len(weight[0]), len(weight)).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(weight, dtype=torch.float64))
        lin.bias.copy_(torch.tensor(bias, dtype=torch.float64))
    return lin


W = [[1.0, -2.0, 0.0, 0.5], [0.0, 1.0, 0.0, -0.5], [0.2, 0.2, 0.0, 0.2]]
B = [0.3, 0.0, -0.1]


def test_decomposition_of_a_linear_model_matches_the_closed_form():
    model = linear(W, B)
    x = torch.tensor([[0.5, 0.1, 0.9, 0.4], [0.2, 0.3, 0.5, 0.8]], dtype=torch.float64)
    y = torch.tensor([0, 0])
    out = decomposition(model, x, y)
    weight, bias = torch.tensor(W, dtype=torch.float64), torch.tensor(B, dtype=torch.float64)
    for i in range(2):
        z = weight @ x[i] + bias
        k = max((j for j in range(3) if j != 0), key=lambda j: z[j])
        g = weight[0] - weight[k]
        m = (z[0] - z[k]).item()
        f = 1 / (1 + math.exp(-m))
        l1, l2 = g.abs().sum().item(), g.norm().item()
        assert out["m"][i].item() == pytest.approx(m)
        assert out["f"][i].item() == pytest.approx(f)
        assert out["f_one_minus_f"][i].item() == pytest.approx(f * (1 - f))
        assert out["m_l1"][i].item() == pytest.approx(l1)
        assert out["m_l2"][i].item() == pytest.approx(l2)
        assert out["f_l1"][i].item() == pytest.approx(f * (1 - f) * l1)  # df/dx = f (1 - f) dm/dx
        assert out["m_l1_over_l2"][i].item() == pytest.approx(l1 / l2)
        assert out["m_effective_support"][i].item() == pytest.approx((l1 / l2) ** 2)
        assert out["m_zero_fraction"][i].item() == pytest.approx((g == 0).double().mean().item())
        assert out["flip_distance"][i].item() == pytest.approx(m / l1)
        assert out["identity_error"][i].item() < 1e-12


def test_a_confident_model_has_a_smaller_probability_gradient_with_the_same_margin_gradient_direction():
    """Scaling the logits by c scales ||dm/dx|| by c but moves f (1 - f): the confound the issue names."""
    x = torch.tensor([[0.5, 0.1, 0.9, 0.4]], dtype=torch.float64)
    y = torch.tensor([0])
    base = decomposition(linear(W, B), x, y)
    scaled = decomposition(linear([[8 * w for w in row] for row in W], [8 * b for b in B]), x, y)
    assert scaled["m_l1"].item() == pytest.approx(8 * base["m_l1"].item())
    assert scaled["m_l1_over_l2"].item() == pytest.approx(base["m_l1_over_l2"].item())
    assert scaled["f_l1"].item() < base["f_l1"].item()  # more confident: f (1 - f) shrinks faster than m grows
    assert scaled["flip_distance"].item() == pytest.approx(base["flip_distance"].item())  # scale-free


def two_layer_snn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """x [1, 2] -> Linear(2, 2) -> IFNeuron (T = 1, threshold 1) -> Linear(2, 3). Hidden currents 1.3 and -1:
    membrane distances v = 0.3 and -2 from the threshold."""
    first, second = nn.Linear(2, 2), nn.Linear(2, 3)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, 0.6], [-1.0, 0.0]]))
        first.bias.copy_(torch.tensor([0.0, 0.0]))
        second.weight.copy_(torch.tensor([[2.0, 1.0], [-1.0, 3.0], [0.0, 0.0]]))
        second.bias.copy_(torch.tensor([0.0, 0.0, 0.5]))
    neuron = IFNeuron(threshold=1.0, estimator="triangle:1", time_steps=1)
    x = torch.tensor([[1.0, 0.5]])  # currents (1.3, -1.0)
    return nn.Sequential(first, neuron, second), x, torch.tensor([0])


def test_two_layer_snn_margin_gradient_and_surrogate_zeros_match_hand_values():
    model, x, y = two_layer_snn()
    # spikes (1, 0): logits (2, -1, 0.5): rival class 2, m = 1.5; dm/ds = W2[0] - W2[2] = (2, 1)
    # triangle of half-width 1: sg(0.3) = 0.7, sg(-2) = 0; dm/dx = 2 * 0.7 * (1, 0.6) = (1.4, 0.84)
    out = measure_batch(model, x, y, x, 0.1, "triangle:1")
    own = out["triangle:1"]["clean"]
    assert own["m"].item() == pytest.approx(1.5)
    assert own["m_l1"].item() == pytest.approx(1.4 + 0.84, rel=1e-6)
    assert own["flip_distance"].item() == pytest.approx(1.5 / 2.24, rel=1e-6)
    # triangle:4: sg(0.3) = 3.7 / 16, sg(-2) = 2 / 16: dm/dx = 2 * 3.7/16 * (1, 0.6) + 1 * 2/16 * (-1, 0)
    wide = out["triangle:4"]["clean"]
    g = (2 * 3.7 / 16 - 2 / 16, 2 * 3.7 / 16 * 0.6)
    assert wide["m_l1"].item() == pytest.approx(abs(g[0]) + abs(g[1]), rel=1e-6)
    assert set(out) == {"triangle:1", "triangle:4", "bptr"}
    # the input gradient has no zero although half of the layer's surrogate derivatives are exactly zero
    assert own["m_zero_fraction"].item() == 0.0
    zeros = surrogate_zeros(model, x, "triangle:1")
    assert list(zeros["triangle:1"]["layers"].values()) == [pytest.approx(0.5)]
    assert list(zeros["triangle:4"]["layers"].values()) == [pytest.approx(0.0)]


def test_half_step_point_moves_eps_over_two_against_the_training_gradient():
    model = linear(W, B)
    x = torch.tensor([[0.5, 0.1, 0.9, 0.4]], dtype=torch.float64)
    y = torch.tensor([0])
    out = measure_batch(model, x, y, x, 0.2, "exact")  # no spiking layers: one estimator
    assert list(out) == ["exact"]
    z = torch.tensor(W, dtype=torch.float64) @ x[0] + torch.tensor(B, dtype=torch.float64)
    g = torch.tensor(W[0], dtype=torch.float64) - torch.tensor(W[int(z[1:].argmax()) + 1], dtype=torch.float64)
    m0 = (z[0] - z[1:].max()).item()
    # the linear margin falls by exactly 0.1 * ||g||_1 where no pixel is clipped (x + 0.1 stays in [0, 1])
    assert out["exact"]["half_step"]["m"].item() == pytest.approx(m0 - 0.1 * g.abs().sum().item())
    summary = summarize_point(out["exact"]["half_step"])
    assert summary["identity"]["violations"] == 0 and summary["samples"] == 1


def test_gap_in_margin_units_matches_the_closed_form_of_a_one_pixel_linear_model():
    a, eps = 1.5, 0.1
    model = linear([[a], [0.0]], [-0.2, 0.0])
    x, y = torch.tensor([[0.6]], dtype=torch.float64), torch.tensor([0])
    K = 2000
    uniform = (-1 + (2 * torch.arange(K, dtype=torch.float64) + 1) / K).view(K, 1, 1)
    signs = torch.tensor([1.0, -1.0], dtype=torch.float64).view(2, 1, 1)
    attack, _, _ = fallback_attacks(seed=0)
    out = gap_at_eps(model, x, y, eps, attack(eps), uniform, signs)
    assert out.pop("x_adv").shape == x.shape
    assert out["drop_adv_margin"].item() == pytest.approx(a * eps, abs=1e-9)  # PGD reaches the corner
    assert out["drop_rand_margin_mean"].item() == pytest.approx(0.0, abs=1e-9)  # linear: noise is unbiased
    assert out["drop_rand_margin_abs"].item() == pytest.approx(a * eps / 2, rel=1e-5)  # E|a eps u| = a eps / 2
    assert out["drop_sign_margin_abs"].item() == pytest.approx(a * eps, abs=1e-9)
    summary = summarize_gap(out)
    assert summary["ratio_margin_abs"] == pytest.approx(2.0, rel=1e-5)
    assert summary["ratio_margin"] is None  # a mean drop of 0: undefined, not infinite


def test_flip_distance_edges_and_rank_agreement():
    m = torch.tensor([1.0, -0.5, 2.0, 0.0], dtype=torch.float64)
    l1 = torch.tensor([4.0, 1.0, 0.0, 2.0], dtype=torch.float64)
    assert flip_distance(m, l1).tolist() == [0.25, 0.0, math.inf, 0.0]
    assert rank_agreement(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0, math.inf])) == pytest.approx(1.0)
    assert rank_agreement(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    assert rank_agreement(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])) is None


def test_flip_summary_counts_agreement_on_clean_correct_samples_only():
    distance = torch.tensor([0.3, 0.05, 0.2, 0.01, 9.0], dtype=torch.float64)
    half = torch.tensor([0.3, 0.0, 0.0, 0.0, 9.0], dtype=torch.float64)
    min_eps = torch.tensor([0.4, 0.05, 0.1, 0.02, 0.0], dtype=torch.float64)
    survived = torch.tensor([True, False, True, False, False])
    correct = torch.tensor([True, True, True, True, False])
    out = flip_summary(distance, half, min_eps, survived, correct, eps=0.1)
    # predicted survivors (distance > 0.1): samples 0 and 2; both survived; 1 and 3 fell as predicted
    assert out["samples"] == 4 and out["agreement_with_attack"] == 1.0
    assert out["predicted_survivors"] == 2 and out["survivors"] == 2
    # two steps: 0.05 + (0.3, 0, 0, 0): only sample 0 predicted to survive; sample 2 disagrees
    assert out["two_step_agreement_with_attack"] == pytest.approx(0.75)
    assert out["flip_distance"]["median"] == pytest.approx(0.125)


def test_penalty_probe_of_a_linear_model_is_the_squared_margin_gradient_norm():
    model = linear(W, B)
    x = torch.tensor([[0.5, 0.1, 0.9, 0.4], [0.2, 0.3, 0.5, 0.8]], dtype=torch.float64)
    y = torch.tensor([0, 0])
    out = decomposition(model, x, y)
    probe = penalty_probe(model, x, y, h=1e-4)
    # the margin is linear: its finite difference along sign(dm/dx) is ||dm/dx||_1 exactly
    assert probe["margin_penalty"] == pytest.approx(out["m_l1"].pow(2).mean().item(), rel=1e-6)
    assert probe["sr_penalty"] == pytest.approx(out["f_l1"].pow(2).mean().item(), rel=1e-3)


def test_training_logs_the_sr_penalty_for_vanilla_too(digits, tmp_path):
    train(config_from_dict({"epochs": 1, "time_steps": 2, "batch_size": 64, "defense": "vanilla",
                            "grad_stats_batch": 32}), tmp_path / "run", progress=False, data=digits)
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert "penalty" not in record  # vanilla computes no penalty: it records none, not 0.0
    assert record["val_sr_penalty"] > 0 and record["val_margin_penalty"] > 0
    assert record["grad_margin_l1"] > record["grad_l1"]  # f (1 - f) <= 1/4


# ---- the explanation is written from the numbers ------------------------------------------------------

def test_direction_words_follow_the_numbers():
    from spikeguard.report.explain import direction

    assert direction(1.0, 2.0) == "rises" and direction(2.0, 1.0) == "falls"
    assert direction(1.0, 1.05) == "does not change"


def test_the_mechanism_sentences_flip_when_the_numbers_are_reversed():
    from spikeguard.report.explain import Mechanism, mechanism_sentences

    vanilla = Mechanism(grad_f_l1=0.2, grad_m_l1=30.0, confidence=0.006, l1_over_l2=5.9, flip_distance=0.15)
    sr = Mechanism(grad_f_l1=0.9, grad_m_l1=8.0, confidence=0.1, l1_over_l2=5.0, flip_distance=0.3)
    forward = " ".join(mechanism_sentences(vanilla, sr, "vanilla", "sr"))
    backward = " ".join(mechanism_sentences(sr, vanilla, "vanilla", "sr"))  # the same numbers, reversed
    assert "||dm/dx||_1 falls 3.8x (30 to 8)" in forward and "||dm/dx||_1 rises 3.8x (8 to 30)" in backward
    assert "the quantity the SR penalty estimates, rises" in forward
    assert "the quantity the SR penalty estimates, falls" in backward
    assert "lower confidence hides it" in forward and "lower confidence hides it" not in backward
    assert "grew more confident" in backward  # penalised quantity falls only through confidence
    assert "flip distance m / ||dm/dx||_1 rises" in forward and "flip distance m / ||dm/dx||_1 falls" in backward
    both = Mechanism(grad_f_l1=0.1, grad_m_l1=8.0, confidence=0.006, l1_over_l2=5.0, flip_distance=0.3)
    assert "as the paper's mechanism says" in " ".join(mechanism_sentences(vanilla, both, "vanilla", "sr"))
