"""spikeguard is extended without editing it: an attack kind and a backward estimator defined here, in the
test, run through a suite file to results.json, its CSV and the sanity flags."""

import json

import pytest
import torch

from spikeguard.attacks import AttackCall, fgsm, register_attack
from spikeguard.attacks.registry import ATTACKS
from spikeguard.errors import UserError
from spikeguard.evaluation import EvalConfig, Target, run_evaluation
from spikeguard.snn import register_estimator, unregister_estimator


def two_half_steps(model, x, y, call: AttackCall):
    """An iterative attack of our own: ``steps`` FGSM steps of eps / steps each."""
    steps = call.params["steps"]
    x_adv = x
    for _ in range(steps):
        x_adv = torch.min(torch.max(fgsm(model, x_adv, y, call.eps / steps, draws=call.draws), x - call.eps),
                          x + call.eps)
    return x_adv


def do_nothing(model, x, y, call: AttackCall):
    """A broken 'iterative' attack: it returns its input, so FGSM beats it and a flag must say so."""
    return x.clone()


def raised_cosine(v: torch.Tensor, width: float) -> torch.Tensor:
    """A surrogate shape of our own: (1 + cos(pi v / width)) / (2 width) on |v| < width, unit area."""
    inside = v.abs() < width
    return torch.where(inside, (1 + torch.cos(torch.pi * v / width)) / (2 * width), torch.zeros_like(v))


@pytest.fixture
def registered():
    register_attack("half-steps", two_half_steps, params={"steps": 2}, iterative=True, label="half-steps-{steps}")
    register_attack("do-nothing", do_nothing, params={"steps": 5}, iterative=True)
    register_estimator("raised-cosine", derivative=raised_cosine, default_width=1.0)
    yield
    ATTACKS.unregister("half-steps")
    ATTACKS.unregister("do-nothing")
    unregister_estimator("raised-cosine")


def write_suite(tmp_path, estimators):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ncascade: true\nchecks: {unbounded_n: 8, unbounded_steps: 5}\nattacks:\n"
                    f"  - {{attack: fgsm, estimators: {estimators}}}\n"
                    f"  - {{attack: half-steps, steps: 3, estimators: {estimators}}}\n"
                    f"  - {{attack: do-nothing, estimators: {estimators}}}\n"
                    "  - {attack: random-sign, draws: 2}\n")
    return path


def test_a_registered_attack_runs_through_a_suite_file_to_results_and_flags(registered, tiny_model, digits,
                                                                            tmp_path):
    config = EvalConfig(suite=str(write_suite(tmp_path, "[raised-cosine:0.5, ann]")), eps=0.15, n=24,
                        batch_size=12, progress=False)
    record = run_evaluation(config, Target.of(tiny_model, digits.test, 10))
    record.write(tmp_path / "results.json")
    results = json.loads((tmp_path / "results.json").read_text())
    ours = next(a for a in results["attacks"] if a["attack"] == "half-steps")
    assert ours["name"] == "half-steps-3" and ours["params"]["steps"] == 3
    assert set(ours["accuracy_per_estimator"]) == {"raised-cosine:0.5", "ann"}
    assert ours["accuracy_per_estimator"]["raised-cosine:0.5"] < results["clean_accuracy"]  # its gradient attacks
    assert "raised-cosine:0.5" in results["gradient_check"]["zero_gradient_fraction"]
    header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    assert {"half-steps-3", "half-steps-3|raised-cosine:0.5", "half-steps-3|ann"} <= set(header)
    # the flags read the registry: the do-nothing attack is iterative, and FGSM broke what it missed
    weaker = [f for f in results["flags"] if f["name"] == "iterative_weaker_than_single_step"]
    assert any(f["detail"].startswith("do-nothing missed") for f in weaker)
    assert "iterative_weaker_than_single_step" not in {f["name"] for f in results["flags_not_applicable"]}


def test_unknown_and_unregistered_attacks_are_one_line_errors(tmp_path, tiny_model, digits):
    path = write_suite(tmp_path, "[triangle:1]")  # names attacks that are not registered here
    with pytest.raises(UserError, match="unknown attack 'half-steps'") as info:
        run_evaluation(EvalConfig(suite=str(path), eps=0.1, n=4, progress=False), Target.of(tiny_model, digits.test, 10))
    assert "\n" not in str(info.value) and "fgsm" in str(info.value)
    with pytest.raises(ValueError, match="registered already"):
        register_attack("pgd", two_half_steps)
