"""When the gradient lies: the probes that catch it, the escalation that goes on without it, the headline
that says "not a bound", non-finite outputs, and --verify --all."""

import json

import pytest
import torch
from lying_models import LIARS, Decoy, honest_classifier, trick_aware_accuracy

from spikeguard.cli import main
from spikeguard.errors import UserError
from spikeguard.evaluation import EvalConfig, Target, run_evaluation, runner
from spikeguard.evaluation.bank import BANK
from spikeguard.evaluation.stochastic import check_state_carry, grad_mode_dependent, is_stochastic
from spikeguard.evaluation.suites import load_suite, suite_from_dict

EPS, N, STEPS = 0.1, 100, 20
SMALL = {"name": "small", "checks": {"unbounded_n": 16, "unbounded_steps": 10},
         "escalation": {"decision_queries": 1000, "substitute_epochs": 15, "substitute_queries": 2000, "transfer_steps": STEPS,
                        "estimate_steps": STEPS, "estimate_directions": 64, "square_queries": 1000,
                        "square_restarts": 2},
         "attacks": [{"attack": "fgsm", "estimators": ["triangle:1"]},
                     {"attack": "pgd", "steps": STEPS, "estimators": ["triangle:1"]},
                     {"attack": "square", "queries": 300, "survivors_only": True},
                     {"attack": "random-sign", "draws": 2}]}


@pytest.fixture(scope="module")
def honest(digits_tensors):
    (x, y), _ = digits_tensors
    return honest_classifier(x, y, epochs=10)


def evaluate(model, digits, suite=SMALL, n=N, **config):
    return run_evaluation(EvalConfig(suite=suite_from_dict(suite), eps=EPS, n=n, batch_size=100, progress=False,
                                     **config), Target.of(model, digits.test, 10, train=digits.train)).results


@pytest.mark.parametrize("liar", sorted(LIARS))
def test_escalation_comes_close_to_the_attack_that_knows_the_trick(honest, digits, digits_tensors, liar):
    _, (x, y) = digits_tensors
    aware = trick_aware_accuracy(honest, x[:N], y[:N], EPS, STEPS)
    results = evaluate(LIARS[liar](honest), digits)
    before, after = results["ensemble_accuracy_before_escalation"], results["ensemble_accuracy"]
    assert before >= aware + 0.10, f"the liar should fool the plain suite: {before:.2f} vs {aware:.2f}"
    assert abs(after - aware) <= 0.05, f"escalated {after:.2f}, trick-aware {aware:.2f}"
    headline = results["headline"]
    assert headline["label"] == "not a bound" and not headline["is_bound"] and headline["accuracy"] == after
    assert len(headline["tried"]) == 5 and headline["why"]  # two substitutes, NES, Square, RayS
    escalation = results["escalation"]
    assert all(facts["inputs"] > 0 for facts in escalation["substitute"].values()) and escalation["seconds"] > 0
    assert {r["name"] for r in escalation["results"]} == {"escalation-transfer", "escalation-estimated-gradient",
                                                          "escalation-square", "escalation-decision"}


def test_an_honest_model_is_a_bound_and_costs_no_escalation(honest, digits):
    suite = {**SMALL, "attacks": SMALL["attacks"][:2] + SMALL["attacks"][3:]}  # no query attack to outdo PGD
    results = evaluate(honest, digits, suite=suite, n=40)
    assert results["flags"] == [] and "escalation" not in results
    assert results["headline"] == {"accuracy": results["ensemble_accuracy"], "is_bound": True, "label": "bound",
                                   "why": [], "tried": []}


def test_a_disabled_escalation_still_marks_the_headline(honest, digits):
    suite = {**SMALL, "escalation": {"enabled": False}}
    results = evaluate(LIARS["zero-backward"](honest), digits, suite=suite, n=30)
    assert "escalation" not in results and results["headline"]["label"] == "not a bound"
    assert "disabled" in results["headline"]["tried"][0]


# --- probes ---------------------------------------------------------------------------------------------

class Remembers(torch.nn.Module):
    """A classifier whose output drifts with the inputs it saw before (a state that is never reset)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.memory = inner, None

    def forward(self, x):
        out = self.inner(x)
        drift = 0 if self.memory is None else self.memory[: len(out)]
        self.memory = out.detach()
        return out + 0.5 * drift


class RandomWhen(torch.nn.Module):
    """Deterministic, except under autograd or from its ``after``-th call on: random logits noise then."""

    def __init__(self, inner, under_autograd=False, after=None):
        super().__init__()
        self.inner, self.under_autograd, self.after, self.calls = inner, under_autograd, after, 0

    def forward(self, x):
        self.calls += 1
        out = self.inner(x)
        noisy = (self.under_autograd and torch.is_grad_enabled()) or (self.after and self.calls >= self.after)
        return out + 3 * torch.randn_like(out) if noisy else out


def test_state_that_carries_between_calls_is_refused_in_one_line(honest, digits, digits_tensors):
    _, (x, _) = digits_tensors
    with pytest.raises(UserError, match="state carries over") as info:
        check_state_carry(Remembers(honest), x[:16], seed=0)
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="state carries over"):
        evaluate(Remembers(honest), digits, n=8)
    check_state_carry(honest, x[:16], seed=0)  # quiet on an honest model


def test_randomness_is_probed_under_autograd_and_over_several_calls(honest, digits_tensors):
    _, (x, _) = digits_tensors
    assert not is_stochastic(honest, x[:16])
    assert is_stochastic(RandomWhen(honest, under_autograd=True), x[:16])
    assert is_stochastic(RandomWhen(honest, after=4), x[:16])
    assert not grad_mode_dependent(honest, x[:16], seed=0)
    assert grad_mode_dependent(Decoy(honest), x[:16], seed=0)
    assert not is_stochastic(Decoy(honest), x[:16])  # a decoy is grad-mode dependence, not randomness


def test_spikeguard_models_keep_every_probe_quiet_under_every_estimator(tiny_model, digits):
    plan = runner.Plan(tiny_model, digits.test, load_suite("strong"), EPS, 10, n=16)
    probe = runner.probe_batch(plan)
    check_state_carry(tiny_model, probe, seed=0)
    assert not is_stochastic(tiny_model, probe)
    members = runner.SuiteRunner(plan, 1)
    assert set(BANK) <= set(members.gradient_estimators)  # pdsg and ann among them
    assert members.grad_mode_members(probe) == []


class NaNLogits(torch.nn.Module):
    """NaN logits always, or only off the digits' value grid (multiples of 1/16): on perturbed inputs."""

    def __init__(self, inner, when_perturbed=False):
        super().__init__()
        self.inner, self.when_perturbed = inner, when_perturbed

    def forward(self, x):
        out = self.inner(x)
        off_grid = (x * 16 - (x * 16).round()).abs().max() > 1e-4
        return out * torch.nan if not self.when_perturbed or off_grid else out


def test_non_finite_outputs_are_one_line_errors(honest, digits):
    for model in (NaNLogits(honest), NaNLogits(honest, when_perturbed=True)):
        with pytest.raises(UserError, match="NaN or inf logits") as info:
            evaluate(model, digits, n=8)
        assert "\n" not in str(info.value)


# --- verify --all ---------------------------------------------------------------------------------------

def test_verify_all_catches_a_consistent_forgery_of_one_sample(tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "r.json"
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--time-steps", "2", "--out", str(run),
                 "--no-progress"]) == 0
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nchecks: {unbounded_n: 0}\nattacks:\n  - {attack: fgsm, estimators: [triangle:1]}\n")
    assert main(["evaluate", str(run), "--suite", str(suite), "--n", "40", "--batch-size", "4", "--out", str(out),
                 "--no-progress"]) == 0
    results = json.loads(out.read_text())
    csv_path = out.with_suffix(".csv")
    lines = csv_path.read_text().splitlines()
    header = lines[0].split(",")
    forged = next(i for i in range(len(lines) - 1, 0, -1) if lines[i].split(",")[header.index("robust")] == "0")
    cells = lines[forged].split(",")
    for column in ("robust", "fgsm", "fgsm|triangle:1"):  # consistently: the sample stood
        cells[header.index(column)] = "1"
    for column in ("broken_by", "fgsm|broken_by"):
        cells[header.index(column)] = ""
    lines[forged] = ",".join(cells)
    csv_path.write_text("\n".join(lines) + "\n")
    for key in ("ensemble_accuracy",):
        results[key] += 1 / 40
    results["attacks"][0]["accuracy"] += 1 / 40
    results["attacks"][0]["accuracy_per_estimator"]["triangle:1"] += 1 / 40
    out.write_text(json.dumps(results))
    capsys.readouterr()
    assert main(["evaluate", "--verify", str(out), "--all", "--no-progress"]) == 1
    assert f"sample {forged - 1}" in capsys.readouterr().err
    assert "--all" in one_line(capsys, ["evaluate", "--all", "--suite", "quick"])


def one_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    return err


@pytest.mark.parametrize("library", ["spikingjelly", "snntorch"])
def test_library_snns_keep_the_probes_quiet_and_unwrapped_state_is_caught(library, digits, digits_tensors):
    from ecosystem_models import JellyCSNN, TorchCSNN, train

    from spikeguard.external import wrap_external

    (x, y), (xt, _) = digits_tensors
    torch.manual_seed(0)
    raw = train(JellyCSNN() if library == "spikingjelly" else TorchCSNN(), x[:256], y[:256], epochs=1)
    model = wrap_external(raw)  # what every spikeguard entry point does: state reset before each pass
    plan = runner.Plan(model, digits.test, load_suite("quick"), EPS, 10, n=16)
    probe = runner.probe_batch(plan)
    check_state_carry(model, probe, seed=0)
    assert not is_stochastic(model, probe)
    assert runner.SuiteRunner(plan, 1).grad_mode_members(probe) == []
    if library == "spikingjelly":  # its multi-step neurons keep v between calls unless reset: caught
        with pytest.raises(UserError, match="state carries over"):
            check_state_carry(raw, xt[:16], seed=0)
