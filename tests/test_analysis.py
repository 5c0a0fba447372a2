"""The analysis against closed forms (linear models), planted thresholds and hand counts, then end to end
on a tiny trained SNN and through the command line."""

import json
import math

import pytest
import torch
import yaml
from torch import nn

from spikeguard.analysis import (
    AnalysisSettings,
    analyze_model,
    bisect_min_eps,
    draw_directions,
    first_order,
    gap_at_eps,
    gradient_norms,
    measure_activity,
    probability_gradient,
    synaptic_consumers,
)
from spikeguard.analysis.activity import ENERGY_CONSTANTS, fanout
from spikeguard.analysis.analyze import fallback_attacks, parse_eps_list
from spikeguard.analysis.gradients import cauchy_schwarz_violations
from spikeguard.analysis.min_eps import attack_flips, noise_flips
from spikeguard.checkpoint import save_checkpoint
from spikeguard.cli import main
from spikeguard.errors import UserError
from spikeguard.models import SpikingNet
from spikeguard.snn import IFNeuron, spiking_layers
from tests.conftest import tiny_spec

sig = torch.sigmoid


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def binary_linear(a: list[float], c: float, dtype=torch.float64) -> nn.Module:
    """Two classes, logits (a . x + c, 0): for label 0, f(x) = sigmoid(a . x + c) exactly."""
    lin = nn.Linear(len(a), 2).to(dtype)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[0] = torch.tensor(a, dtype=dtype)
        lin.bias.zero_()
        lin.bias[0] = c
    return nn.Sequential(nn.Flatten(), lin)


def images(rows: list[list[float]], dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype).view(len(rows), 1, 1, -1)


# ---- gradient norms and the first-order quantities ----------------------------------------------------

def test_gradient_norms_match_the_closed_form_of_a_linear_model():
    a = torch.tensor([0.5, -1.0, 0.0, 2.0, 1e-6], dtype=torch.float64)
    model = binary_linear(a.tolist(), 0.3)
    x = images([[0.5, 0.5, 0.5, 0.02, 0.5]])
    m = (a * x.flatten()).sum() + 0.3
    slope = sig(m) * (1 - sig(m))
    g, f = probability_gradient(model, x, torch.tensor([0]))
    assert f.item() == pytest.approx(sig(m).item(), abs=1e-12)
    assert torch.allclose(g.flatten(), slope * a, atol=1e-15)
    norms = gradient_norms(g, tolerance=1e-3)
    assert norms["zero_fraction"].item() == pytest.approx(1 / 5)
    assert norms["small_fraction"].item() == pytest.approx(2 / 5)  # the zero and the 1e-6 entry
    assert norms["l0"].item() == 4
    assert norms["l1"].item() == pytest.approx((slope * a.abs().sum()).item(), rel=1e-12)
    assert norms["l2"].item() == pytest.approx((slope * a.norm()).item(), rel=1e-12)
    assert norms["effective_support"].item() == pytest.approx((a.abs().sum() / a.norm()).item() ** 2, rel=1e-12)
    assert norms["effective_support"].item() < norms["l0"].item()
    assert cauchy_schwarz_violations(norms) == 0

    eps = 0.05
    fo = first_order(g, x, eps)
    assert fo["adv"].item() == pytest.approx(eps * norms["l1"].item(), rel=1e-12)
    # pixel 3 has a positive gradient and only 0.02 of room below it: the box caps its step
    box = slope * (eps * (0.5 + 1.0 + 1e-6) + 2.0 * 0.02)
    assert fo["adv_box"].item() == pytest.approx(box.item(), rel=1e-9)
    l2 = norms["l2"].item()
    assert fo["sign_low"].item() == pytest.approx(eps * l2 / math.sqrt(2))
    assert fo["rand_high"].item() == pytest.approx(eps * l2 / math.sqrt(3))
    assert fo["ratio_bound_rand"].item() == pytest.approx(2 * math.sqrt(2) * 2.0)


def test_cauchy_schwarz_holds_for_random_gradients_and_a_violation_is_caught():
    g = torch.randn(50, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    g[g.abs() < 0.5] = 0
    norms = gradient_norms(g)
    assert cauchy_schwarz_violations(norms) == 0
    assert (norms["l1_over_l2"] <= norms["sqrt_l0"] + 1e-9).all()
    norms["l1"][3] = norms["sqrt_l0"][3] * norms["l2"][3] * 1.01
    assert cauchy_schwarz_violations(norms) == 1


# ---- rho_adv and rho_rand ----------------------------------------------------------------------------

def test_gap_matches_closed_forms_of_a_one_pixel_linear_model():
    a, c, x0, eps = 1.5, -0.2, 0.6, 0.1
    model = binary_linear([a], c)
    x, y = images([[x0]]), torch.tensor([0])
    m, b = a * x0 + c, a * eps
    K = 4000  # a midpoint grid on [-1, 1]: E over uniform noise up to O(1/K^2)
    uniform = (-1 + (2 * torch.arange(K, dtype=torch.float64) + 1) / K).view(K, 1, 1, 1, 1)
    signs = torch.tensor([1.0, -1.0], dtype=torch.float64).view(2, 1, 1, 1, 1)
    attack, _, _ = fallback_attacks(seed=0)
    out = gap_at_eps(model, x, y, eps, attack(eps), uniform, signs)

    def s(v):
        return 1 / (1 + math.exp(-v))
    assert out["drop_adv"].item() == pytest.approx(s(m) - s(m - b), abs=1e-12)  # PGD reaches the corner
    assert out["drop_adv_softmax"].item() == pytest.approx(out["drop_adv"].item(), abs=1e-12)  # two classes
    mean_f = (softplus(m + b) - softplus(m - b)) / (2 * b)
    assert out["drop_rand_mean"].item() == pytest.approx(s(m) - mean_f, abs=1e-7)
    abs_change = (softplus(m + b) - 2 * softplus(m) + softplus(m - b)) / b / 2
    assert out["drop_rand_abs"].item() == pytest.approx(abs_change, abs=1e-7)
    assert out["drop_rand_worst"].item() == pytest.approx(s(m) - s(m - b * (1 - 1 / K)), abs=1e-12)
    assert out["drop_sign_mean"].item() == pytest.approx(s(m) - (s(m + b) + s(m - b)) / 2, abs=1e-12)
    assert out["drop_sign_abs"].item() == pytest.approx((s(m + b) - s(m - b)) / 2, abs=1e-12)
    assert out["drop_sign_worst"].item() == pytest.approx(s(m) - s(m - b), abs=1e-12)
    assert bool(out["correct_adv"]) and out["accuracy_rand"].item() == 1.0


def test_adversarial_drop_is_never_negative_because_x_is_in_the_ball():
    model = binary_linear([1.0, -1.0], 0.2)
    x, y = images([[0.5, 0.5], [0.4, 0.7]]), torch.tensor([0, 0])
    def helpful(model, x, y):
        return x + torch.tensor([0.05, -0.05], dtype=x.dtype).view(1, 1, 1, 2)
    u, s = draw_directions(x, 3, torch.Generator().manual_seed(0))
    out = gap_at_eps(model, x, y, 0.05, helpful, u, s)
    assert torch.equal(out["drop_adv"], torch.zeros(2, dtype=torch.float64))


def test_directions_come_from_the_given_generator_only():
    x = torch.rand(4, 1, 3, 3)
    state = torch.random.get_rng_state()
    u1, s1 = draw_directions(x, 5, torch.Generator().manual_seed(3))
    u2, s2 = draw_directions(x, 5, torch.Generator().manual_seed(3))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(u1, u2) and torch.equal(s1, s2) and u1.shape == (5, 4, 1, 3, 3)
    assert u1.abs().max() <= 1 and set(s1.unique().tolist()) == {-1.0, 1.0}


# ---- minimal eps -------------------------------------------------------------------------------------

def test_bisection_finds_planted_thresholds():
    thresholds = torch.tensor([0.05, 0.3, 0.77, 2.0, 0.5], dtype=torch.float64)
    wrong = torch.tensor([False, False, False, False, True])
    calls = []

    def flips(idx, eps):
        calls.append(idx.numel())
        return eps >= thresholds[idx]

    steps, eps_max = 12, 1.0
    found = bisect_min_eps(flips, 5, eps_max, steps, wrong)
    tol = eps_max / 2 ** steps
    for i in range(3):
        assert thresholds[i] <= found[i] <= thresholds[i] + tol
    assert math.isinf(found[3]) and found[4] == 0
    assert max(calls) <= 4 and len(calls) == steps + 1  # resolved samples are never asked again
    coarse = bisect_min_eps(flips, 5, eps_max, 0, wrong)
    assert coarse[:3].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(UserError):
        bisect_min_eps(flips, 5, -1.0, 3)


def test_minimal_eps_of_a_linear_model_matches_its_closed_form():
    a = torch.tensor([1.0, -2.0, 0.5])
    c = 0.05 - (a * 0.5).sum().item()        # margin 0.05 at x = 0.5
    model = binary_linear(a.tolist(), c, torch.float32)
    x = images([[0.5, 0.5, 0.5], [0.55, 0.45, 0.5], [0.5, 0.5, 0.6], [0.2, 0.9, 0.2]], torch.float32)
    y = torch.zeros(4, dtype=torch.long)
    margins = (x.flatten(1) * a).sum(1) + c
    assert margins[3] < 0 < margins[:3].min()
    eps_max, steps = 0.2, 14
    tol = eps_max / 2 ** steps
    _, flip_attack, _ = fallback_attacks(seed=0)
    wrong = margins < 0
    adv = bisect_min_eps(attack_flips(model, x, y, flip_attack), 4, eps_max, steps, wrong)
    expected = margins.double() / a.abs().sum()
    slack = 1e-6  # float32 rounding of the margin near the boundary
    for i in range(3):
        assert expected[i] - slack <= adv[i] <= expected[i] + tol + slack
    assert adv[3] == 0

    u, _ = draw_directions(x, 6, torch.Generator().manual_seed(1))
    rand = bisect_min_eps(noise_flips(model, x, y, u), 4, 1.0, steps, wrong)
    push = (-(u.flatten(2) * a).sum(2)).amax(0)  # the largest margin decrease per unit eps over the draws
    expected_rand = margins.double() / push
    assert (expected_rand[:3] * u.abs().max() < 0.4).all()  # inside the box: no clipping in the closed form
    for i in range(3):
        assert expected_rand[i] - slack <= rand[i] <= expected_rand[i] + 1.0 / 2 ** steps + slack


# ---- activity and energy -----------------------------------------------------------------------------

def two_layer_snn() -> SpikingNet:
    """Linear(4 -> 3) -> IF -> Linear(3 -> 2), T = 4. On an all-ones image the three neurons get currents
    1.0, 0.5 and -0.3 at every step: 4, 2 and 0 spikes."""
    first, second = nn.Linear(4, 3, bias=False), nn.Linear(3, 2)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[0.25] * 4, [0.125] * 4, [-0.075] * 4]))
    body = nn.Sequential(nn.Flatten(), first, IFNeuron(time_steps=4), second)
    return SpikingNet(body, time_steps=4, mean=(0.0,), std=(1.0,))


def test_sops_of_a_two_layer_spiking_net_match_a_hand_count():
    model = two_layer_snn()
    x = torch.stack([torch.ones(1, 2, 2), torch.zeros(1, 2, 2)])  # 6 spikes and 0 spikes
    out = measure_activity(model, x)
    (layer,) = out["layers"]
    assert layer["consumers"] == ["body.3"] and layer["fanout"] == 2
    assert layer["spikes_per_inference"] == 3                  # (6 + 0) / 2 samples
    assert out["sops_total"] == layer["sops"] == 6             # 3 spikes x fan-out 2
    assert layer["firing_rate"] == pytest.approx(3 / (3 * 4))  # spikes / (neurons x steps)
    assert layer["silent_fraction"] == pytest.approx(1 / 3)    # the -0.3 neuron never fires
    assert out["analog_layers"] == ["body.1"] and out["analog_macs"] == 4 * 3 * 4  # 12 MACs x 4 steps
    assert out["ann_macs"] == 4 * 3 + 3 * 2
    e = ENERGY_CONSTANTS
    assert out["energy_joules"] == pytest.approx(e["e_ac_joules"] * 6 + e["e_mac_joules"] * 48)
    assert out["ann_energy_joules"] == pytest.approx(e["e_mac_joules"] * 18)
    assert "Horowitz" in out["energy_constants"]["source"]


def test_conv_fanout_and_consumers_through_pooling(tiny_model):
    assert fanout(nn.Conv2d(2, 5, 3, stride=2)) == pytest.approx(5 * 9 / 4)
    assert fanout(nn.Conv2d(4, 8, 3, groups=2)) == 4 * 9
    consumers, method = synaptic_consumers(tiny_model)
    assert method == "traced graph"
    # conv -> BN -> IF -> conv ...; the second IF reaches the linear layer through AvgPool and Flatten
    assert consumers == {"body.2": ["body.3"], "body.5": ["body.8"], "body.10": ["body.11"]}


def test_consumers_fall_back_to_module_order_when_tracing_fails():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.s, self.b = nn.Linear(4, 3), IFNeuron(time_steps=1), nn.Linear(3, 2)

        def forward(self, x):
            h = self.s(self.a(x))
            return self.b(h) if h.sum() > 0 else self.b(h) * 2  # data-dependent: not traceable

    consumers, method = synaptic_consumers(Branchy())
    assert method == "module order" and consumers == {"s": ["b"]}


# ---- end to end --------------------------------------------------------------------------------------

def test_analyze_model_on_a_tiny_snn(tiny_model, digits_batch):
    x, y = digits_batch
    settings = AnalysisSettings(eps=(0.3, 0.1), draws=2, bisect_steps=2, seed=5, estimator="sigmoid:4")
    state = torch.random.get_rng_state()
    attack, flip, _ = fallback_attacks(5)
    summary, rows = analyze_model(tiny_model, x, y, settings, attack, flip)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(layer.estimator.name == "triangle:1" for layer in spiking_layers(tiny_model))  # restored
    assert summary["eps"] == [0.1, 0.3] and len(rows) == 2 * len(y)
    assert summary["gradient"]["estimator"] == "sigmoid:4"
    assert summary["gradient"]["cauchy_schwarz_violations"] == 0
    for r in summary["per_eps"]:
        assert 0 <= r["accuracy_adv"] <= r["accuracy_clean"] and r["rho_adv"] >= 0
        assert r["ratio"] is None or r["ratio"] == pytest.approx(r["rho_adv"] / r["rho_rand"])
        lo, hi = r["first_order"]["rand_abs"]
        assert 0 <= lo <= hi
    assert summary["per_eps"][0]["first_order"]["adv"] < summary["per_eps"][1]["first_order"]["adv"]
    assert summary["sops_total"] == pytest.approx(sum(layer["sops"] for layer in summary["layers"]))
    assert len(summary["layers"]) == 3 and all(0 < layer["firing_rate"] < 1 for layer in summary["layers"])
    m = summary["min_eps"]
    assert m["samples"] + m["clean_wrong"] == len(y)
    assert all(0 <= row["min_eps_adv"] <= 4 * 0.3 or math.isinf(row["min_eps_adv"]) for row in rows)
    assert m["adv"]["eps_max"] == pytest.approx(1.0) and m["rand"]["eps_max"] == 1.0
    mech = summary["mechanism"]  # at the first eps, under the analysed estimator and the two others
    assert mech["eps"] == 0.1 and list(mech["estimators"]) == ["sigmoid:4", "triangle:4", "bptr"]
    for points in mech["estimators"].values():
        assert list(points) == ["clean", "half_step", "attack_end"]
        assert all(p["identity"]["violations"] == 0 and p["samples"] == len(y) for p in points.values())
    clean = mech["estimators"]["sigmoid:4"]["clean"]
    assert clean["f_l1"]["mean"] == pytest.approx(summary["gradient"]["l1"], rel=1e-5)  # the same gradient
    assert set(mech["surrogate_zeros"]) == {"sigmoid:4", "triangle:4", "bptr"}
    assert mech["flip"]["samples"] == m["samples"]
    flips = [row["flip_distance"] for row in rows if row["eps"] == 0.1]
    assert all((d > 0) == (row["correct_clean"] == 1) for d, row in zip(flips, rows))
    again, _ = analyze_model(tiny_model, x, y, settings, *fallback_attacks(5)[:2])
    assert json.dumps(again, sort_keys=True) == json.dumps(summary, sort_keys=True)  # explicit generators


def test_stochastic_models_are_refused(tiny_model, digits_batch):
    from spikeguard.models import create_model

    x, y = digits_batch
    model = create_model(tiny_spec(encoder="poisson"))
    model.load_state_dict(tiny_model.state_dict(), strict=False)  # the trained body behind Poisson input
    with pytest.raises(UserError, match="stochastic"):
        analyze_model(model, x, y, AnalysisSettings(eps=(0.1,)), *fallback_attacks(0)[:2])


@pytest.mark.parametrize("eps, fragment", [((), "empty"), ((0.1, -0.2), "positive"), ((float("nan"),), "positive")])
def test_bad_eps_lists_are_refused(eps, fragment):
    with pytest.raises(UserError, match=fragment):
        AnalysisSettings(eps=eps).resolved()


def test_eps_lists_parse_from_repeated_and_comma_separated_flags():
    assert parse_eps_list(["0.1,8/255", "0.1"]) == pytest.approx((8 / 255, 0.1))
    for bad in ([""], ["0.1,,0.2"], ["-1"], ["abc"]):
        with pytest.raises(UserError):
            parse_eps_list(bad)


@pytest.fixture
def tiny_run(tmp_path, tiny_model):
    """A run directory holding the session's tiny model, as `spikeguard train` would write it."""
    run = tmp_path / "run"
    run.mkdir()
    config = {"dataset": "digits", "model": "digits_cnn", "defense": "vanilla", "lamb": 0.0, "eps": 0.1,
              "seed": 0, "val_fraction": 0.1}
    save_checkpoint(run / "best.pt", {"arch": tiny_spec().to_dict(), "dataset": "digits", "config": config,
                                      "model": tiny_model.state_dict(), "epoch": 1, "val_accuracy": 0.9})
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "loss": 1.0, "val_accuracy": 0.9, "grad_l1": 0.5,
                                                   "grad_zero_fraction": 0.1}) + "\n")
    return run


ANALYZE_FAST = ["--n", "6", "--draws", "2", "--bisect-steps", "1", "--no-progress"]


def test_analyze_command_writes_json_csv_and_figures(tiny_run, tmp_path, capsys):
    out = tmp_path / "analysis"
    assert main(["analyze", str(tiny_run), "--out", str(out), "--eps", "0.05,0.2", *ANALYZE_FAST]) == 0
    summary = json.loads((out / "analysis.json").read_text())
    for key in ("eps", "per_eps", "gradient", "layers", "sops_total", "energy_joules", "energy_constants", "model",
                "dataset", "checkpoint", "attack", "min_eps"):
        assert key in summary
    assert summary["model"] == "digits_cnn" and summary["eps"] == [0.05, 0.2] and summary["n"] == 6
    for key in ("eps", "rho_adv", "rho_rand", "ratio"):
        assert key in summary["per_eps"][0]
    for key in ("l0_fraction", "l1", "l2", "zero_fraction", "small_fraction"):
        assert key in summary["gradient"]
    lines = (out / "per_sample.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 6 and lines[0].startswith("index,label,eps,")
    assert len(summary["figures"]) == 5
    for rel in summary["figures"].values():
        assert (out / rel).stat().st_size > 1000
    said = capsys.readouterr().out
    assert "rho_adv" in said
    clean = summary["mechanism"]["estimators"]["triangle:1"]["clean"]  # the terminal says the measured medians
    assert f"||dm/dx||_1 {clean['m_l1']['median']:.4g} (m the logit margin)" in said
    # six digits cannot cover ten classes: the analysis says which it left out, in its record and on the terminal
    labels = sorted({int(row.split(",")[1]) for row in lines[1:]})
    missing = ", ".join(str(c) for c in range(10) if c not in labels)
    assert summary["notes"] == [f"the first 6 samples hold {len(labels)} of the split's 10 classes (missing: {missing}): "
                                "the numbers describe those classes only"]
    assert f"note: {summary['notes'][0]}" in said


def one_line_error(capsys, argv, fragment):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err, err


def test_analyze_bad_input_is_one_line_exit_2(tiny_run, tmp_path, capsys):
    out = str(tmp_path / "a")
    one_line_error(capsys, ["analyze", str(tiny_run), "--out", out, "--eps", "-0.1"], "positive")
    one_line_error(capsys, ["analyze", str(tiny_run), "--out", out, "--eps", ""], "empty")
    one_line_error(capsys, ["analyze", str(tmp_path / "nope"), "--out", out], "does not exist")
    one_line_error(capsys, ["analyze", str(tiny_run), "--out", out, "--estimator", "wobbly"], "unknown estimator")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    one_line_error(capsys, ["analyze", str(tiny_run), "--out", str(tmp_path / "full")], "already exists")


def results_record(model="digits_cnn", dataset="digits", **extra) -> dict:
    return {"model": model, "dataset": dataset, "n": 6, "eps": 0.1, "suite": "quick", "seed": 0,
            "clean_accuracy": 0.9, "attacks": [], "ensemble_accuracy": 0.5, "flags": [],
            "per_sample": "per_sample.csv", **extra}


def test_analyze_refuses_results_of_another_model(tiny_run, tmp_path, capsys):
    out = str(tmp_path / "a")
    other = tmp_path / "other.json"
    other.write_text(json.dumps(results_record(model="vgg11", dataset="cifar10")))
    one_line_error(capsys, ["analyze", str(tiny_run), "--out", out, "--results", str(other)], "vgg11")
    elsewhere = tmp_path / "other_run"
    elsewhere.mkdir()
    (elsewhere / "config.yaml").write_text("defense: sr\n")
    (elsewhere / "results.json").write_text(json.dumps(results_record()))
    one_line_error(capsys, ["analyze", str(tiny_run), "--out", out, "--results", str(elsewhere / "results.json")],
                   "another run")
    named = tmp_path / "named.json"
    named.write_text(json.dumps(results_record(checkpoint=str(elsewhere / "best.pt"))))
    one_line_error(capsys, ["analyze", str(tiny_run), "--out", out, "--results", str(named)], "computed on")
    not_results = tmp_path / "x.json"
    not_results.write_text("{}")
    one_line_error(capsys, ["analyze", str(tiny_run), "--out", out, "--results", str(not_results)], "not a spikeguard")


def test_analyze_includes_matching_results(tiny_run, tmp_path):
    (tiny_run / "results.json").write_text(json.dumps(results_record()))
    out = tmp_path / "a"
    assert main(["analyze", str(tiny_run / "best.pt"), "--out", str(out), "--results",
                 str(tiny_run / "results.json"), *ANALYZE_FAST]) == 0
    summary = json.loads((out / "analysis.json").read_text())
    assert summary["evaluation"]["ensemble_accuracy"] == 0.5 and summary["eps"] == [0.1]  # the training eps
