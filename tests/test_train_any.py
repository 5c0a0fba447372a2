"""spikeguard.train and ``spikeguard train --model-fn``: a SpikingJelly and an snnTorch CSNN trained with SR
through spikeguard's loop (one or two steps on a digits subset), the recorded penalty equal to a hand-written
one, checkpoints that name the model function and its source, resume, and spikeguard.load of such a run."""

from __future__ import annotations

import copy
import dataclasses
import json
import sys

import pytest
import torch
import torch.nn.functional as F
from ecosystem_models import JellyCSNN, TorchCSNN, reset, train
from torch.utils.data import Subset

import spikeguard
from spikeguard.checkpoint import read_checkpoint
from spikeguard.cli import main
from spikeguard.data import load_dataset
from spikeguard.defenses.sparsity import strongest_rival, true_class_probability
from spikeguard.errors import UserError

H, LAMB = 0.1, 0.1


@pytest.fixture(scope="module")
def splits():
    data = load_dataset("digits", seed=0, augment=False)
    return dataclasses.replace(data, train=Subset(data.train, range(96)), val=Subset(data.val, range(48)))


def hand_penalty(model, x, y):
    """docs/method.md's SR penalty written out, with the library's state reset before every pass."""
    xg = x.clone().requires_grad_(True)
    reset(model)
    logits = model(xg)
    rival = strongest_rival(logits, y)
    f = true_class_probability(logits, y, rival)
    (g,) = torch.autograd.grad(f.sum(), xg)
    reset(model)
    f_step = true_class_probability(model(x + H * g.sign()), y, rival)
    return ((f_step - f) / H).pow(2).mean().item(), F.cross_entropy(logits, y).item()


@pytest.mark.parametrize("make", [JellyCSNN, TorchCSNN])
def test_sr_training_of_a_library_csnn_records_the_hand_written_penalty(make, splits, tmp_path):
    x = torch.stack([splits.train[i][0] for i in range(96)])
    y = torch.as_tensor([int(splits.train[i][1]) for i in range(96)])
    torch.manual_seed(0)
    model = train(make(), x, y, epochs=1)  # one that spikes, so the penalty is not 0 (the run would stop)
    start = copy.deepcopy(model).train()
    expected, ce = hand_penalty(start, x, y)
    result = spikeguard.train(model, splits, defense="sr", lamb=LAMB, h=H, epochs=1, batch_size=96, lr=0.05,
                              out=tmp_path / "run", device="cpu", progress=False)
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert expected > 0
    assert record["penalty"] == pytest.approx(expected, rel=1e-4)  # one step: the batch is the whole subset
    assert record["ce"] == pytest.approx(ce, rel=1e-4)
    assert result.model.model is model  # trained in place (wrapped: state reset before every pass)
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), start.parameters()))
    best = read_checkpoint(tmp_path / "run" / "best.pt")
    assert best["arch"] is None and best["model_class"].endswith(make.__name__)
    assert best["config"]["model"] is None and best["config"]["defense"] == "sr"
    loaded = spikeguard.load(tmp_path / "run", model=make())  # a class given as an object: its weights loaded
    assert all(torch.equal(p, q) for p, q in zip(loaded.parameters(), result.model.parameters()))
    assert loaded.facts["defense"] == "sr" and loaded.facts["model_fn"] is None
    with pytest.raises(UserError, match="given as an object"):
        spikeguard.load(tmp_path / "run")


MODULE = """
import torch
from torch import nn
from spikingjelly.activation_based import neuron


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), neuron.IFNode(), nn.Linear(32, 10), neuron.IFNode())

    def forward(self, x):
        return torch.stack([self.net(x) for _ in range(4)]).mean(0)


def make():
    return Net()
"""


def test_model_function_runs_from_the_cli_resume_and_load(tmp_path, monkeypatch):
    name = "sg_train_fn_test"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert main(["train", "--model-fn", f"{name}:make", "--dataset", "digits", "--defense", "sr", "--lamb", "0.1",
                 "--epochs", "1", "--batch-size", "512", "--out", str(run), "--device", "cpu", "--no-progress"]) == 0
    best = read_checkpoint(run / "best.pt")
    assert best["model_fn"] == f"{name}:make" and len(best["model_fn_sha256"]) == 64
    assert best["config"]["model_fn"] == f"{name}:make" and best["config"]["model"] is None
    with pytest.raises(UserError, match="lamb cannot change"):
        spikeguard.train(f"{name}:make", "digits", "sr", lamb=0.5, resume=True, epochs=2, out=run)
    result = spikeguard.train(f"{name}:make", "digits", "sr", lamb=0.1, resume=True, epochs=2, out=run,
                              progress=False)
    assert result.best_epoch in (1, 2)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    model = spikeguard.load(run)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert model(x).shape == (3, 10)
    assert model.facts["model_fn"] == f"{name}:make" and model.facts["dataset"] == "digits"
    assert model.facts["defense"] == "sr" and model.facts["eps"] == best["config"]["eps"]
    small = tmp_path / "small.yaml"
    small.write_text("name: small\nattacks:\n  - attack: fgsm\n    estimators: [triangle:1]\n")
    result = spikeguard.evaluate(model, suite=str(small), n=4)  # the checkpoint's data set and eps
    assert result.results["dataset"] == "digits" and result.results["eps"] == best["config"]["eps"]
    assert main(["evaluate", str(run), "--suite", str(small), "--n", "4", "--out", str(tmp_path / "r.json"),
                 "--no-progress"]) == 0
    cli = json.loads((tmp_path / "r.json").read_text())
    assert cli["model_fn"] == f"{name}:make" and cli["ensemble_accuracy"] == result.robust_accuracy
    assert main(["analyze", str(run), "--n", "4", "--draws", "2", "--bisect-steps", "2", "--out",
                 str(tmp_path / "analysis"), "--no-progress"]) == 0
    # a checkpoint whose module cannot be imported: one line naming it
    sys.modules.pop(name, None)
    (tmp_path / f"{name}.py").unlink()
    with pytest.raises(UserError, match=name):
        spikeguard.load(run)


def test_train_refuses_bad_input_in_one_line(splits, tmp_path):
    with pytest.raises(UserError, match="model must be"):
        spikeguard.train(42, splits)
    with pytest.raises(UserError, match="unknown config key"):
        spikeguard.train(JellyCSNN(), splits, defense="sr", lamb=0.1, nonsense=1, out=tmp_path / "a")
    with pytest.raises(UserError, match="data must be"):
        spikeguard.train(JellyCSNN(), [1, 2, 3])
