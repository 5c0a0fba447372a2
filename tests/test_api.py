"""The Python API (spikeguard.evaluate / load): lazy, the README's example runs, and it gives the same
per-sample results as the command line for a SpikingJelly and an snnTorch model."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import spikeguard
from spikeguard.cli import main

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"name": "small", "cascade": True, "attacks": [
    {"attack": "fgsm", "estimators": ["triangle:1", "bptr"]},
    {"attack": "pgd", "steps": 3, "restarts": 1, "estimators": ["atan:2", "hart:0.5", "ann"]}]}


def test_import_spikeguard_does_not_import_torch():
    code = ("import sys, spikeguard; assert 'torch' not in sys.modules; spikeguard.evaluate; assert 'torch' in sys.modules;"
            "import spikeguard.data, spikeguard.cli, spikeguard.evaluation.evaluate; assert 'sklearn' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_readme_example_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## SpikingJelly and snnTorch models.*?```python\n(.*?)```", text, re.S).group(1)
    block = block.replace('suite="quick"', 'suite="' + str(_small(tmp_path)) + '"')  # CI time: a small suite
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    results = json.loads((tmp_path / "digits_jelly.json").read_text())
    assert results["external_model"]["libraries"]["spikingjelly"] == "2.0.0"
    assert len(results["external_model"]["weights_sha256"]) == 64


def _small(tmp_path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL))
    return path


@pytest.mark.parametrize("builder", ["JellyCSNN", "TorchCSNN"])
def test_cli_and_api_agree_per_sample(builder, tmp_path, monkeypatch):
    import ecosystem_models

    (tmp_path / "eco_build.py").write_text(
        "import torch\nfrom ecosystem_models import JellyCSNN, TorchCSNN\n"
        f"def build():\n    torch.manual_seed(0)\n    return {builder}().eval()\n")
    monkeypatch.syspath_prepend(str(Path(ecosystem_models.__file__).parent))
    monkeypatch.chdir(tmp_path)
    suite = _small(tmp_path)
    out = tmp_path / "cli.json"
    assert main(["evaluate", "--model-fn", "eco_build:build", "--dataset", "digits", "--eps", "0.15", "--suite",
                 str(suite), "--n", "12", "--out", str(out), "--no-progress"]) == 0
    cli = json.loads(out.read_text())
    import eco_build

    result = spikeguard.evaluate(eco_build.build(), "digits", suite=str(suite), eps=0.15, n=12)
    sys.modules.pop("eco_build", None)
    csv = (tmp_path / "cli.csv").read_text().splitlines()
    header = csv[0].split(",")
    robust = [float(line.split(",")[header.index("robust")]) for line in csv[1:]]
    assert robust == [row["robust"] for row in result.per_sample]
    assert cli["ensemble_accuracy"] == result.robust_accuracy
    bank = cli["estimator_bank"]
    assert all(bank[m]["applied"] for m in ("triangle:1", "bptr", "atan:2", "hart:0.5", "ann")), bank
    assert cli["external_model"]["weights_sha256"] == result.results["external_model"]["weights_sha256"]


def test_tensor_pair_and_adversarial_examples(digits_tensors):
    import torch
    from ecosystem_models import TorchCSNN, reset

    _, (x, y) = digits_tensors
    torch.manual_seed(0)
    model = TorchCSNN().eval()
    result = spikeguard.evaluate(model, (x[:8], y[:8]), suite=SMALL_PATH(), eps=0.1, return_adversarial=True)
    assert result.adversarial.shape == x[:8].shape
    assert (result.adversarial - x[:8]).abs().max() <= 0.1 + 1e-6
    reset(model)
    with torch.no_grad():
        wrong = model(result.adversarial).argmax(1) != y[:8]
        clean_wrong = model(x[:8]).argmax(1) != y[:8]
    # the examples the evaluation counted: misclassified exactly where the sample counts as not robust
    assert bool(wrong[clean_wrong].all())
    assert wrong.tolist() == [row["robust"] == 0 for row in result.per_sample]
    assert result.accuracies and result.accuracies == {a["name"]: a["accuracy"] for a in result.results["attacks"]}
    # the honesty signal, typed: the number to quote and whether it is a bound, also in the printed form
    assert result.headline.accuracy == result.results["headline"]["accuracy"]
    assert result.is_bound == result.results["headline"]["is_bound"]
    assert f"({result.headline.label})" in repr(result)


def test_result_says_when_its_headline_is_not_a_bound():
    from spikeguard.api import Result

    results = {"clean_accuracy": 0.9, "ensemble_accuracy": 0.5, "attacks": [], "flags": [], "n": 2,
               "headline": {"accuracy": 0.5, "is_bound": False, "label": "not a bound", "why": ["zero gradients"]}}
    result = Result(0.9, 0.5, {}, [], [], results)
    assert result.is_bound is False and result.headline.why == ["zero gradients"]
    assert "not a bound" in repr(result)
    result = Result(0.9, 0.5, {}, [], [], {**results, "headline": {**results["headline"], "is_bound": True,
                                                                     "label": "bound"}})
    assert result.is_bound is True and "(bound)" in repr(result)


def SMALL_PATH():
    import tempfile

    path = Path(tempfile.mkdtemp()) / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL))
    return str(path)


def test_load_names_a_missing_checkpoint_in_one_line(tmp_path):
    from spikeguard.errors import UserError

    with pytest.raises(UserError):
        spikeguard.load(tmp_path / "nope.pt")


def test_evaluate_leaves_the_neuron_state_as_found(digits_tensors):
    import torch
    from ecosystem_models import JellyCSNN

    _, (x, y) = digits_tensors
    torch.manual_seed(0)
    model = JellyCSNN().eval()
    with torch.no_grad():
        model(x[:3])  # state left behind by the user's own call
    before = [{k: v for k, v in m._memories.items()} for m in model.modules() if hasattr(m, "_memories")]
    spikeguard.evaluate(model, (x[:4], y[:4]), suite=SMALL_PATH(), eps=0.1)
    after = [{k: v for k, v in m._memories.items()} for m in model.modules() if hasattr(m, "_memories")]
    assert all(a.keys() == b.keys() and all(a[k] is b[k] for k in a) for a, b in zip(before, after))


# ----------------------------------------------------------------- the API's door: one line per bad input

def test_numpy_input_loaders_read_up_to_n_and_mode_restored(digits_tensors):
    import torch
    from ecosystem_models import JellyCSNN

    _, (x, y) = digits_tensors
    torch.manual_seed(0)
    model = JellyCSNN().train()
    a = spikeguard.evaluate(model, (x[:6].numpy(), y[:6].numpy()), suite=SMALL_PATH(), eps=0.1, device="cpu")
    assert all(m.training for m in model.modules())  # the caller's mode back

    class OneBatchOnly:  # a loader that must not be read past n samples
        def __iter__(self):
            yield x[:6], y[:6]
            raise AssertionError("read past n")

    b = spikeguard.evaluate(model, OneBatchOnly(), suite=SMALL_PATH(), eps=0.1, n=6)
    assert [r["robust"] for r in a.per_sample] == [r["robust"] for r in b.per_sample]
    c = spikeguard.evaluate(model, torch.utils.data.TensorDataset(x[:6], y[:6]), suite=SMALL_PATH(), eps=0.1)
    assert [r["robust"] for r in a.per_sample] == [r["robust"] for r in c.per_sample]


def test_bad_inputs_end_in_one_line_naming_the_argument(digits_tensors):
    import torch

    from spikeguard.errors import UserError

    _, (x, y) = digits_tensors
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with pytest.raises(UserError, match=r"data: images must lie in \[0, 1\]"):
        spikeguard.evaluate(flat, (x[:4] * 255, y[:4]), eps=0.1)

    class PerStep(torch.nn.Module):  # returns T x N x C
        def forward(self, inp):
            return flat(inp).unsqueeze(0).repeat(4, 1, 1)

    with pytest.raises(UserError, match=r"returned \(4, 1, 10\); expected logits of shape \(1, classes\)"):
        spikeguard.evaluate(PerStep(), (x[:4], y[:4]), eps=0.1)
    with pytest.raises(UserError) as error:
        spikeguard.evaluate(flat, (x[:4], y[:4]))  # no eps, no checkpoint to take it from
    assert "--" not in str(error.value) and "eps" in str(error.value)
    with pytest.raises(UserError, match="give data"):
        spikeguard.evaluate(flat)


def test_top_level_names_are_listed_and_lazy():
    code = ("import sys, spikeguard; names = dir(spikeguard); assert 'torch' not in sys.modules, 'torch';"
            "assert {'evaluate', 'load', 'train', 'Result', 'TrainResult', 'attacks'} <= set(names), names;"
            "assert set(spikeguard.__all__) <= set(names)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    assert (ROOT / "spikeguard" / "py.typed").is_file()


def test_evaluation_options_reach_the_evaluation(digits_tensors):
    import torch
    from ecosystem_models import JellyCSNN

    _, (x, y) = digits_tensors
    torch.manual_seed(0)
    model, source = JellyCSNN(), JellyCSNN()
    result = spikeguard.evaluate(model, (x[:4], y[:4]), suite=SMALL_PATH(), eps=0.1, threat_model="linf",
                                 eot_draws=2, source=source)
    r = result.results
    assert r["eot_draws"] == 2 and r["threat_model"]["name"] == "linf"
    assert "transfer" in result.accuracies and r["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
