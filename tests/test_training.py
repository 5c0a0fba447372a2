"""The training loop: reproducible, checkpoints that rebuild the same model, NaN caught, CIFAR end to end."""

import dataclasses
import json
import random

import numpy as np
import pytest
import torch
from test_data import _make_cifar

from spikeguard.checkpoint import load_model
from spikeguard.cli import main
from spikeguard.config import TrainConfig
from spikeguard.data.splits import ImageDataset
from spikeguard.errors import UserError
from spikeguard.training import train

FAST = dict(dataset="digits", epochs=1, time_steps=2, batch_size=128)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, digits, one_thread):
    return train(TrainConfig(defense="sr", lamb=0.01, **FAST), tmp_path_factory.mktemp("a") / "run",
                 progress=False, data=digits)


def test_same_seed_gives_identical_weights_and_leaves_the_global_rng_alone(first_run, digits, tmp_path):
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(5)
    before = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    again = train(TrainConfig(defense="sr", lamb=0.01, **FAST), tmp_path / "run", progress=False, data=digits)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert random.getstate() == before[1] and (np.random.get_state()[1] == before[2]).all()
    for (name, a), b in zip(first_run.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_checkpoint_rebuilds_the_trained_model(first_run, digits_tensors):
    _, (x, _) = digits_tensors
    loaded, ckpt = load_model(first_run.run_dir / "best.pt")
    assert ckpt["epoch"] == first_run.best_epoch and ckpt["val_accuracy"] == first_run.best_val_accuracy
    with torch.no_grad():
        assert torch.equal(loaded(x[:50]), first_run.model(x[:50]))


def test_nan_in_the_data_stops_training_with_one_line_and_keeps_the_run(digits, tmp_path):
    train_set = digits.train
    images = train_set.images.clone()
    images[train_set.indices[:5]] = float("nan")
    poisoned = dataclasses.replace(digits, train=ImageDataset(images, train_set.labels, train_set.indices))
    with pytest.raises(UserError, match="diverged") as err:
        train(TrainConfig(defense="vanilla", **FAST), tmp_path / "run", progress=False, data=poisoned)
    assert "\n" not in str(err.value)
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_cifar10_end_to_end_through_the_cli(tmp_path, capsys):
    _make_cifar(tmp_path / "data", "cifar10", np.random.default_rng(0))
    run = tmp_path / "run"
    assert main(["train", "--dataset", "cifar10", "--model", "digits_cnn", "--data-dir", str(tmp_path / "data"),
                 "--epochs", "1", "--time-steps", "2", "--batch-size", "16", "--out", str(run), "--no-progress"]) == 0
    record = json.loads((run / "metrics.jsonl").read_text())
    assert record["epoch"] == 1 and 0 <= record["val_accuracy"] <= 1
    out = tmp_path / "results.json"
    assert main(["evaluate", str(run), "--suite", "paper", "--out", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["dataset"] == "cifar10" and result["n"] == 20 and result["eps"] == pytest.approx(8 / 255)
