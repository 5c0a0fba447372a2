"""The attack suite: budgets, worst cases, reproducibility, EoT, estimators, flags and the CLI."""

import json
import sys

import pytest
import torch
from evaluation_calls import evaluate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from spikeguard.attacks import autoattack_adapter as library
from spikeguard.attacks import pgd, rfgsm
from spikeguard.attacks.noise import random_signs, uniform_noise
from spikeguard.cli import main
from spikeguard.errors import UserError
from spikeguard.evaluation import bank, load_suite, strongest_examples
from spikeguard.evaluation.flags import per_sample_flags
from spikeguard.evaluation.suites import suite_from_dict
from spikeguard.runtime import eval_mode
from spikeguard.schema import SampleOutcome
from spikeguard.snn import PoissonEncoder

FAST = {"name": "fast", "eot_draws": 3, "checks": {"unbounded_n": 8, "unbounded_steps": 5},
        # the escalation (when a flag fires) at a test's size
        "escalation": {"decision_queries": 50, "substitute_epochs": 2, "substitute_queries": 200, "transfer_steps": 5,
                       "estimate_steps": 5, "estimate_directions": 8, "square_queries": 50, "square_restarts": 1},
        "attacks": [{"attack": "fgsm", "estimators": ["triangle:1", "ann"]},
                    {"attack": "pgd", "steps": 5, "estimators": ["triangle:1", "ann"]},
                    {"attack": "square", "queries": 20},
                    {"attack": "random-sign", "draws": 2}]}


def fast_suite(**changes):
    return suite_from_dict({**FAST, **changes})


def run(model, digits, suite=None, n=24, **kw):
    return evaluate(model, digits.test, suite or fast_suite(), 0.15, num_classes=10, n=n, batch_size=12,
                    progress=False, **kw)


# --- budgets -------------------------------------------------------------------------------------------

@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(eps=st.floats(0.0, 0.4), seed=st.integers(0, 100), alpha=st.floats(0.0, 1.0))
def test_rfgsm_and_noise_stay_in_the_ball_and_the_box(tiny_model, digits_batch, eps, seed, alpha):
    x, y = digits_batch
    g = torch.Generator().manual_seed(seed)
    with eval_mode(tiny_model):
        for x_adv in (rfgsm(tiny_model, x, y, eps, alpha * eps, generator=g), uniform_noise(x, eps, g),
                      random_signs(x, eps, g)):
            assert x_adv.min() >= 0 and x_adv.max() <= 1 and (x_adv - x).abs().max() <= eps + 1e-6


@pytest.mark.parametrize("attack", ["apgd", "apgd_targeted", "fab_targeted", "square"])
def test_library_attacks_stay_in_the_ball_and_the_box(tiny_model, digits_batch, attack):
    x, y = digits_batch
    kwargs = {"queries": 30} if attack == "square" else {"steps": 5}
    with eval_mode(tiny_model):
        x_adv = getattr(library, attack)(tiny_model, x[:8], y[:8], 0.1, num_classes=10,
                                         generator=torch.Generator().manual_seed(0), **kwargs)
    assert x_adv.shape == x[:8].shape
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and (x_adv - x[:8]).abs().max() <= 0.1 + 1e-6


def test_targeted_attacks_use_the_data_sets_class_count():
    assert library.target_classes(10) == 9 and library.target_classes(100) == 9 and library.target_classes(5) == 4
    with pytest.raises(UserError, match="at least 4 classes"):
        library.target_classes(3)


def test_library_calls_leave_the_global_rng_alone(tiny_model, digits_batch):
    x, y = digits_batch
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with eval_mode(tiny_model):
        library.apgd(tiny_model, x[:4], y[:4], 0.1, num_classes=10, steps=3, generator=torch.Generator())
    assert torch.equal(torch.rand(3), expected)


# --- PGD: restarts, EoT --------------------------------------------------------------------

def test_pgd_with_more_restarts_is_never_weaker_per_sample(tiny_model, digits_tensors):
    _, (x, y) = digits_tensors
    x, y = x[:80], y[:80]
    with eval_mode(tiny_model):
        one = pgd(tiny_model, x, y, 0.08, 0.02, 3, generator=torch.Generator().manual_seed(1), restarts=1)
        three = pgd(tiny_model, x, y, 0.08, 0.02, 3, generator=torch.Generator().manual_seed(1), restarts=3)
        with torch.no_grad():
            loss_one = nn.functional.cross_entropy(tiny_model(one), y, reduction="none")
            loss_three = nn.functional.cross_entropy(tiny_model(three), y, reduction="none")
            fooled_one, fooled_three = tiny_model(one).argmax(1) != y, tiny_model(three).argmax(1) != y
    assert not (fooled_one & ~fooled_three).any()
    standing = ~fooled_three
    assert (loss_three[standing] >= loss_one[standing] - 1e-6).all()


# The cross-check against torchattacks lives in crosscheck/ (its own environment: see .ci/run).


def test_eot_on_a_deterministic_model_equals_the_plain_attack(tiny_model, digits_batch):
    x, y = digits_batch
    with eval_mode(tiny_model):
        plain = pgd(tiny_model, x, y, 0.1, 0.03, 4, generator=torch.Generator().manual_seed(3))
        eot = pgd(tiny_model, x, y, 0.1, 0.03, 4, generator=torch.Generator().manual_seed(3), draws=4)
    assert (plain - eot).abs().max().item() <= 1e-6


# --- estimators ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("member", bank.BANK)
def test_every_estimator_of_the_bank_gives_a_nonzero_input_gradient(tiny_model, digits_batch, member):
    from spikeguard.attacks import input_gradient

    x, y = digits_batch
    with eval_mode(tiny_model), bank.under(tiny_model, member) as target:
        grad, logits = input_gradient(target, x, y)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with torch.no_grad():  # the forward pass (what is scored) never changes; BPDA's adds and subtracts the twin
        reference = tiny_model(x)
    assert torch.equal(logits, reference) if member != "ann" else torch.allclose(logits, reference, atol=1e-5)


def test_bank_names_resolve_and_reject_unknowns():
    assert bank.resolve("paper") == ("triangle:1", "sigmoid:4", "atan:2", "bptr")
    assert "ann" in bank.resolve("bank") and "hart:0.25" in bank.resolve(["quick"])
    with pytest.raises(UserError, match="unknown estimator"):
        bank.resolve(["triangle:1", "magic"])


# --- the runner ------------------------------------------------------------------------------------------

def test_ensemble_is_no_better_than_any_attack_or_estimator(tiny_model, digits):
    results, rows = run(tiny_model, digits, suite=fast_suite(cascade=False))
    assert results["n"] == len(rows) == 24
    for attack in results["attacks"]:
        assert results["ensemble_accuracy"] <= attack["accuracy"] <= results["clean_accuracy"]
        for value in attack["accuracy_per_estimator"].values():
            assert attack["accuracy"] <= value
    for row in rows:
        assert row["robust"] <= min(row[a["name"]] for a in results["attacks"])
        assert (row["broken_by"] == "") == (row["robust"] >= 0.5)
    assert results["ensemble_accuracy"] < results["clean_accuracy"]


def test_cascade_and_full_runs_agree(tiny_model, digits):
    cascade, c_rows = run(tiny_model, digits, suite=fast_suite(cascade=True))
    full, f_rows = run(tiny_model, digits, suite=fast_suite(cascade=False))
    # FGSM has no randomness: attacking only the survivors must give exactly the full run's worst case
    assert cascade["attacks"][0]["accuracy"] == full["attacks"][0]["accuracy"]
    for attack in cascade["attacks"][:2]:  # cascade: per-estimator numbers are cumulative, ending at the attack's
        assert list(attack["accuracy_per_estimator"].values())[-1] == attack["accuracy"]
    for attack in full["attacks"][:2]:  # full: each estimator on every sample, the attack is their minimum
        members = attack["estimators"]
        assert attack["accuracy"] == sum(min(r[f"{attack['name']}|{m}"] for m in members) for r in f_rows) / 24


def test_a_batch_outcome_does_not_depend_on_the_other_batches(tiny_model, digits):
    from evaluation_calls import run_suite

    all_rows, _ = run_suite(tiny_model, digits.test, fast_suite(), 0.15, num_classes=10, n=36, batch_size=12,
                            progress=False)
    one_rows, _ = run_suite(tiny_model, digits.test, fast_suite(), 0.15, num_classes=10, n=36, batch_size=12,
                            batches=[2], progress=False)
    assert one_rows == [r for r in all_rows if r["index"] >= 24]


def test_evaluation_leaves_the_global_rng_and_model_alone(tiny_model, digits):
    from spikeguard.snn import spiking_layers

    tiny_model.train()
    estimators = [layer.estimator for layer in spiking_layers(tiny_model)]
    torch.manual_seed(9)
    expected = torch.rand(2)
    torch.manual_seed(9)
    run(tiny_model, digits, n=12)
    assert torch.equal(torch.rand(2), expected)
    assert tiny_model.training and [layer.estimator for layer in spiking_layers(tiny_model)] == estimators


def test_strongest_examples_lower_the_true_class_probability(tiny_model, digits_batch):
    from spikeguard.defenses import true_class_probability

    x, y = digits_batch
    x_adv = strongest_examples(tiny_model, x, y, 0.1, suite=fast_suite())
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    with torch.no_grad():
        assert (true_class_probability(tiny_model(x_adv), y) <= true_class_probability(tiny_model(x), y) + 1e-6).all()


# --- stochastic models -----------------------------------------------------------------------------------

class NoisyCentroids(nn.Module):
    """A stochastic classifier: nearest class mean of the training images, Gaussian noise on the logits
    at every forward pass."""

    def __init__(self, x_train, y_train, sigma: float = 2.0):
        super().__init__()
        mu = torch.stack([x_train[y_train == c].flatten(1).mean(0) for c in range(10)])
        self.register_buffer("mu", mu)
        self.sigma = sigma

    def clean(self, x):
        return 2 * (x.flatten(1) @ self.mu.T - (self.mu ** 2).sum(1) / 2)

    def forward(self, x):
        logits = self.clean(x)
        return logits + self.sigma * torch.randn_like(logits)


def test_a_stochastic_model_is_detected_and_attacked_with_eot(tiny_model, digits):
    tiny_model.encoder = PoissonEncoder(tiny_model.time_steps)
    results, rows = run(tiny_model, digits, n=12)
    assert results["stochastic"] and results["eot_draws"] == 3
    assert any("EoT" in note for note in results["notes"])
    assert "stochastic_without_eot" not in {f["name"] for f in results["flags"]}
    one, _ = run(tiny_model, digits, n=12, draws=1)
    assert "stochastic_without_eot" in {f["name"] for f in one["flags"]}


def test_partly_correct_samples_of_a_stochastic_model_are_attacked(digits, digits_tensors):
    (x_train, y_train), _ = digits_tensors
    suite = suite_from_dict({"eot_draws": 8, "checks": {"unbounded_n": 0},
                             "attacks": [{"attack": "pgd", "steps": 5, "estimators": ["triangle:1"]}]})
    results, rows = evaluate(NoisyCentroids(x_train, y_train), digits.test, suite, 1.0, num_classes=10, n=40,
                             progress=False)
    assert results["stochastic"] and [r for r in rows if 0 < r["clean_correct"] < 0.5]  # planted by the noise
    # eps = 1 allows any image: attacking every sample with a correct draw left, partly correct ones
    # included, drives the ensemble to (nearly) zero
    assert all(r["pgd-5"] <= r["clean_correct"] for r in rows)
    assert results["ensemble_accuracy"] < 0.05


def test_eot_pgd_beats_single_draw_pgd_on_a_stochastic_model(digits_tensors):
    (x_train, y_train), (x, y) = digits_tensors
    model, x, y = NoisyCentroids(x_train, y_train), x[:60], y[:60]

    def correct_fraction(inputs):
        return torch.stack([(model(inputs).argmax(1) == y).float() for _ in range(50)]).mean().item()

    torch.manual_seed(1)
    single = pgd(model, x, y, 0.1, 0.02, 10, generator=torch.Generator().manual_seed(0), draws=1)
    eot = pgd(model, x, y, 0.1, 0.02, 10, generator=torch.Generator().manual_seed(0), draws=8)
    assert correct_fraction(eot) < correct_fraction(single) - 0.05


# --- flags -----------------------------------------------------------------------------------------------

class Constant(nn.Module):
    """Predicts one class whatever the input, with a zero input gradient: gradient masking at its purest."""

    def __init__(self, label: int):
        super().__init__()
        self.label = label
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 10) + 0 * x.flatten(1).sum(1, keepdim=True) * self.scale
        logits[:, self.label] = 5.0
        return logits


class Quantised(nn.Module):
    """A spiking model behind an input quantiser whose gradient is zero almost everywhere."""

    def __init__(self, snn):
        super().__init__()
        self.snn = snn

    def forward(self, x):
        return self.snn(torch.floor(x * 4) / 4)


def test_zero_gradient_and_unbounded_flags_fire_on_a_masked_model(digits):
    label = int(digits.test[0][1])
    only = [i for i in range(len(digits.test)) if int(digits.test[i][1]) == label][:10]
    subset = torch.utils.data.Subset(digits.test, only)
    results, _ = evaluate(Constant(label), subset, fast_suite(), 0.15, num_classes=10, progress=False,
                          eps_sweep=True)
    names = {f["name"] for f in results["flags"]}
    assert {"zero_gradient", "unbounded_eps_not_zero", "accuracy_not_toward_chance"} <= names
    assert results["unbounded_accuracy"] == 1.0


def test_zero_gradient_flag_fires_on_an_input_quantiser(tiny_model, digits):
    results, _ = run(Quantised(tiny_model), digits, n=24)
    assert "zero_gradient" in {f["name"] for f in results["flags"]}
    assert results["gradient_check"]["all_zero_samples"] > 0


def test_flags_stay_quiet_on_a_plain_model(tiny_model, digits):
    results, _ = run(tiny_model, digits, n=24, eps_sweep=True)
    assert results["flags"] == []
    assert results["unbounded_accuracy"] == 0.0
    assert [p["eps"] for p in results["eps_sweep"]][-1] == 1.0


def test_cross_attack_flags_on_planted_outcomes():
    suite = fast_suite()
    row = {"index": 0, "label": 0, "clean_correct": 1.0, "zero_gradient": "", "fgsm": 0.0, "pgd-5": 1.0,
           "square": 0.0, "random-sign": 1.0}
    names = {f.name for f in per_sample_flags([SampleOutcome.from_row(row)], suite,
                                              ["fgsm", "pgd-5", "square", "random-sign"], ["triangle:1", "ann"])}
    assert names == {"iterative_weaker_than_single_step"}
    row.update({"fgsm": 1.0, "pgd-5": 1.0, "square": 0.0, "zero_gradient": "triangle:1 ann"})
    names = {f.name for f in per_sample_flags([SampleOutcome.from_row(row)], suite,
                                              ["fgsm", "pgd-5", "square", "random-sign"], ["triangle:1", "ann"])}
    assert names == {"black_box_beats_white_box", "zero_gradient"}


# --- suites ----------------------------------------------------------------------------------------------

def test_shipped_suites_load():
    for name in ("paper", "strong", "quick"):
        suite = load_suite(name)
        assert suite.name == name and suite.attacks
    assert [a.label for a in load_suite("paper").attacks] == ["fgsm", "pgd-10", "pgd-30", "pgd-50"]
    strong = load_suite("strong")
    assert {"apgd-ce", "apgd-t", "fab-t", "square"} <= {a.attack for a in strong.attacks}
    assert len(strong.attacks[1].estimators) == len(bank.BANK)


@pytest.mark.parametrize("bad, message", [
    ({"attacks": [{"attack": "cw"}]}, "unknown attack"),
    ({"attacks": [{"attack": "pgd", "estimators": ["magic"]}]}, "unknown estimator"),
    ({"attacks": [{"attack": "pgd", "steps": 0}]}, "steps"),
    ({"attacks": [{"attack": "square", "estimators": ["ann"]}]}, "no gradients"),
    ({"attacks": [{"attack": "pgd", "norm": "l2"}]}, "norm"),
    ({"attacks": [{"attack": "apgd-ce", "norm": "l2"}]}, "own 'eps'"),
    ({"attacks": []}, "no attacks"),
    ({"attacks": [{"attack": "fgsm"}], "extra": 1}, "unknown key"),
    ({"attacks": [{"attack": "fgsm", "label": "clean_correct"}]}, "reserved"),
    ({"attacks": [{"attack": "fgsm", "label": "a|b"}]}, "reserved"),
    ({"attacks": [{"attack": "pgd", "survivors_only": True}]}, "survivors_only"),
])
def test_bad_suites_are_refused(bad, message):
    with pytest.raises(UserError, match=message):
        suite_from_dict(bad)


# --- the command line ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--time-steps", "4", "--out", str(out),
                 "--no-progress"]) == 0
    return out


@pytest.fixture
def fast_suite_file(tmp_path):
    import yaml

    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(FAST))
    return path


def one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_evaluate_writes_results_csv_and_verifies(digits_run, fast_suite_file, tmp_path, capsys):
    out = tmp_path / "r" / "results.json"
    assert main(["evaluate", str(digits_run), "--suite", str(fast_suite_file), "--n", "24", "--batch-size", "12",
                 "--source", str(digits_run), "--out", str(out), "--no-progress"]) == 0
    results = json.loads(out.read_text())
    for key in ("model", "dataset", "n", "eps", "suite", "seed", "clean_accuracy", "attacks", "ensemble_accuracy",
                "flags", "per_sample", "checkpoint_sha256", "code_version", "libraries"):
        assert key in results
    for attack in results["attacks"]:
        assert {"name", "norm", "eps", "params", "estimators", "accuracy", "accuracy_per_estimator",
                "seconds"} <= set(attack)
    assert results["attacks"][-1]["name"] == "transfer"
    lines = (out.parent / results["per_sample"]).read_text().splitlines()
    assert lines[0].startswith("index,label,clean_correct,robust,broken_by") and len(lines) == 25
    capsys.readouterr()
    assert main(["evaluate", "--verify", str(out), "--no-progress"]) == 0
    assert "verified" in capsys.readouterr().out
    # a tampered outcome is caught (every batch is re-run when there are only two)
    csv_path = out.parent / results["per_sample"]
    original_csv = csv_path.read_text()
    rows = original_csv.splitlines()
    header = rows[0].split(",")
    for i in range(1, len(rows)):
        cells = rows[i].split(",")
        cells[header.index("robust")] = "1" if cells[header.index("robust")] == "0" else "0"
        rows[i] = ",".join(cells)
    csv_path.write_text("\n".join(rows) + "\n")
    assert main(["evaluate", "--verify", str(out), "--no-progress"]) == 1
    assert "verification failed" in capsys.readouterr().err
    # so is a summary number that does not follow from the CSV
    csv_path.write_text(original_csv)
    edited = {**results, "ensemble_accuracy": 0.99}
    out.write_text(json.dumps(edited))
    assert main(["evaluate", "--verify", str(out), "--no-progress"]) == 1
    assert "ensemble_accuracy" in capsys.readouterr().err
    # malformed files are one line and exit 2
    out.write_text("5")
    assert "not a spikeguard results file" in one_line_error(capsys, ["evaluate", "--verify", str(out)])
    out.write_text(json.dumps(results))
    csv_path.write_text("index,label\nx,1\n")
    assert "cannot be read" in one_line_error(capsys, ["evaluate", "--verify", str(out)])
    csv_path.unlink()
    assert "cannot be read" in one_line_error(capsys, ["evaluate", "--verify", str(out)])


def test_evaluate_an_external_model(tmp_path, fast_suite_file, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        "import torch\n"
        "def tiny_ann():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))\n"
        "def nothing():\n"
        "    return 3\n")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "ext.json"
    assert main(["evaluate", "--model-fn", "my_models:tiny_ann", "--dataset", "digits", "--eps", "0.1",
                 "--suite", str(fast_suite_file), "--n", "12", "--out", str(out), "--no-progress"]) == 0
    results = json.loads(out.read_text())
    assert results["model"] == "my_models:tiny_ann" and results["checkpoint_sha256"] is None
    sys.modules.pop("my_models", None)


def test_bad_evaluation_input_is_one_line_and_exit_2(digits_run, tmp_path, capsys, monkeypatch):
    out = ["--out", str(tmp_path / "x.json")]
    assert "unknown suite" in one_line_error(capsys, ["evaluate", str(digits_run), "--suite", "nope", *out])
    bad = tmp_path / "bad.yaml"
    bad.write_text("attacks:\n  - {attack: cw}\n")
    assert "unknown attack" in one_line_error(capsys, ["evaluate", str(digits_run), "--suite", str(bad), *out])
    bad.write_text("attacks:\n  - {attack: pgd, estimators: [magic:2]}\n")
    assert "unknown estimator" in one_line_error(capsys, ["evaluate", str(digits_run), "--suite", str(bad), *out])
    assert "eps" in one_line_error(capsys, ["evaluate", str(digits_run), "--suite", "quick", "--eps", "-0.1", *out])
    assert "needs --suite" in one_line_error(capsys, ["evaluate", str(digits_run), *out])
    assert "use .json" in one_line_error(capsys, ["evaluate", str(digits_run), "--suite", "quick", "--out",
                                                  str(tmp_path / "r.csv")])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mods.py").write_text("def three():\n    return 3\n")
    assert "cannot import" in one_line_error(capsys, ["evaluate", "--model-fn", "no_such_pkg.mod:f", "--dataset",
                                                      "digits", "--eps", "0.1", "--suite", "quick", *out])
    assert "not a torch.nn.Module" in one_line_error(capsys, ["evaluate", "--model-fn", "mods:three", "--dataset",
                                                              "digits", "--eps", "0.1", "--suite", "quick", *out])
    sys.modules.pop("mods", None)
    assert not (tmp_path / "x.json").exists()


def test_source_of_another_data_set_is_refused(digits_run, tmp_path, capsys):
    ckpt = torch.load(digits_run / "best.pt", weights_only=True)
    from spikeguard.checkpoint import save_checkpoint

    ckpt["dataset"] = "cifar10"
    other = tmp_path / "other.pt"
    save_checkpoint(other, {k: v for k, v in ckpt.items() if k not in ("format", "version", "sha256")})
    err = one_line_error(capsys, ["evaluate", str(digits_run), "--suite", "quick", "--source", str(other),
                                  "--out", str(tmp_path / "x.json")])
    assert "cifar10" in err


def test_distributed_evaluation_equals_the_single_process_run(digits_run, fast_suite_file, tmp_path):
    import os
    import subprocess

    def launch(nproc, out):
        prefix = [sys.executable, "-m", "spikeguard"] if nproc == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
             "spikeguard"]
        done = subprocess.run([*prefix, "evaluate", str(digits_run), "--suite", str(fast_suite_file),
                               "--num-samples", "30", "--batch-size", "6", "--device", "cpu", "--no-progress", "--out", str(out)],
                              capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(out.read_text()), out.with_suffix(".csv").read_text()

    single, single_csv = launch(1, tmp_path / "single.json")
    merged, merged_csv = launch(2, tmp_path / "merged.json")
    assert merged["ranks"] == 2 and single["ranks"] == 1
    assert merged_csv == single_csv  # rows are sorted by sample index, so even the order matches
    for key in ("clean_accuracy", "ensemble_accuracy", "flags", "unbounded_accuracy"):
        assert merged[key] == single[key]
    assert [a["accuracy"] for a in merged["attacks"]] == [a["accuracy"] for a in single["attacks"]]


def test_pgd_keeps_the_input_dtype(tiny_model, digits_batch):
    x, y = digits_batch
    model = tiny_model.double()
    with eval_mode(model):
        x_adv = pgd(model, x.double(), y, 0.1, 0.03, 2, generator=torch.Generator().manual_seed(0))
    assert x_adv.dtype == torch.float64 and (x_adv - x.double()).abs().max() <= 0.1 + 1e-9
