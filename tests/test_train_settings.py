"""The training estimator and the network (snn or its ANN twin) as run settings: from flag or YAML into
config.yaml, the checkpoint and the rebuilt model, kept on resume, and an ANN evaluated and analysed as one."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from spikeguard.analysis.activity import measure_activity
from spikeguard.checkpoint import load_model, read_checkpoint, save_checkpoint
from spikeguard.cli import main
from spikeguard.config import TrainConfig, config_from_dict
from spikeguard.errors import UserError
from spikeguard.evaluation import evaluate_model
from spikeguard.snn import is_spiking, spiking_layers
from spikeguard.training import resume, train

REPO = Path(__file__).resolve().parents[1]
TINY = dict(dataset="digits", epochs=1, time_steps=2, batch_size=128)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def sigmoid_run(tmp_path_factory, digits):
    return train(TrainConfig(train_estimator="sigmoid", **TINY), tmp_path_factory.mktemp("sig") / "run",
                 progress=False, data=digits)


@pytest.fixture(scope="module")
def ann_run(tmp_path_factory, digits):
    return train(TrainConfig(dataset="digits", epochs=1, batch_size=128, network="ann"),
                 tmp_path_factory.mktemp("ann") / "run", progress=False, data=digits)


def test_the_training_estimator_reaches_config_checkpoint_and_model(sigmoid_run):
    assert yaml.safe_load((sigmoid_run.run_dir / "config.yaml").read_text())["train_estimator"] == "sigmoid:4"
    model, ckpt = load_model(sigmoid_run.run_dir / "best.pt")
    assert ckpt["arch"]["estimator"] == "sigmoid:4" and ckpt["arch"]["spiking"] is True
    assert ckpt["config"]["train_estimator"] == "sigmoid:4"
    assert {layer.estimator.name for layer in spiking_layers(model)} == {"sigmoid:4"}
    assert {layer.estimator.name for layer in spiking_layers(sigmoid_run.model)} == {"sigmoid:4"}


def test_sigmoid_and_triangle_training_move_the_weights_differently(sigmoid_run, digits, tmp_path):
    triangle = train(TrainConfig(**TINY), tmp_path / "run", progress=False, data=digits)  # same seed, same init
    assert {layer.estimator.name for layer in spiking_layers(triangle.model)} == {"triangle:1"}
    differ = [name for (name, a), b in zip(triangle.model.state_dict().items(), sigmoid_run.model.state_dict().values())
              if a.is_floating_point() and not torch.equal(a, b)]
    assert differ and any(name.endswith("weight") for name in differ)


def test_resume_keeps_the_training_estimator_and_refuses_to_change_it(sigmoid_run, digits, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(sigmoid_run.run_dir, run)
    resume(run, epochs=2, progress=False, data=digits)
    last = read_checkpoint(run / "last.pt")
    assert last["epoch"] == 2 and last["arch"]["estimator"] == "sigmoid:4"
    assert yaml.safe_load((run / "config.yaml").read_text())["train_estimator"] == "sigmoid:4"
    with pytest.raises(UserError, match="cannot change train_estimator"):
        resume(run, epochs=3, progress=False, data=digits, train_estimator="atan:2")
    assert main(["train", "--resume", str(run), "--network", "ann", "-q"]) == 2
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "train_estimator": "atan:2"}))
    with pytest.raises(UserError, match="differs from its checkpoint in train_estimator"):
        resume(run, epochs=3, progress=False, data=digits)


def test_a_bad_training_estimator_is_one_line_and_exit_2_before_torch_is_imported(tmp_path):
    code = ("import sys\nfrom spikeguard.cli import main\n"
            f"for argv in (['--train-estimator', 'straight_through'], ['--train-estimator', 'ann'],\n"
            "             ['--train-estimator', 'sigmoid:-1'], ['--network', 'ann', '--train-estimator', 'atan:2'],\n"
            "             ['--network', 'cnn'], ['--network', 'ann', '--time-steps', '4']):\n"
            f"    assert main(['train', '--out', {str(tmp_path / 'run')!r}, *argv]) == 2, argv\n"
            "print('torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.stdout.strip() == "False", done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 6 and "Traceback" not in done.stderr, done.stderr
    assert "is for attacks only" in lines[0] and "triangle, sigmoid, atan" in lines[0]
    assert "--network ann" in lines[1] and "width must be a positive number" in lines[2]
    assert "applies to spiking networks only" in lines[3] and "unknown network 'cnn'" in lines[4]
    assert "one time step" in lines[5]


def test_help_shows_both_settings_with_their_defaults(capsys):
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--train-estimator" in text and "(default: triangle:1)" in text
    assert "--network" in text and "snn | ann" in text and "(default: snn)" in text


def test_network_ann_trains_and_its_checkpoint_rebuilds_an_ann(ann_run, digits_tensors):
    config = yaml.safe_load((ann_run.run_dir / "config.yaml").read_text())
    assert config["network"] == "ann"
    # they do not apply to an ANN (on images T is 1 whatever is asked; the checkpoint records it, below)
    assert "train_estimator" not in config and "tau" not in config and "time_steps" not in config
    assert ann_run.best_val_accuracy > 0.5
    model, ckpt = load_model(ann_run.run_dir / "best.pt")
    assert ckpt["arch"]["spiking"] is False and ckpt["arch"]["time_steps"] == 1
    layers = spiking_layers(model)
    assert layers and not any(layer.spiking for layer in layers) and not is_spiking(model)
    assert model.time_steps == 1 and all(layer.time_steps == 1 for layer in layers)
    _, (x, _) = digits_tensors
    with torch.no_grad():
        assert torch.equal(model(x[:20]), ann_run.model(x[:20]))
    activity = measure_activity(model, x[:20])  # ReLU outputs are not spikes: nothing to count as SOPs
    assert activity["layers"] == [] and activity["sops_total"] == 0
    assert activity["energy_joules"] == pytest.approx(activity["ann_energy_joules"])


def test_an_ann_is_attacked_once_per_attack_not_once_per_estimator(ann_run, sigmoid_run, digits, tmp_path):
    suite = tmp_path / "small.yaml"
    suite.write_text("name: small\ncascade: true\nchecks: {unbounded_n: 8, unbounded_steps: 3}\n"
                     "escalation: {enabled: false}\nattacks:\n"
                     "  - {attack: fgsm, estimators: [triangle:1, sigmoid:4, ann]}\n"
                     "  - {attack: pgd, steps: 3, restarts: 1, estimators: [triangle:1, sigmoid:4, ann]}\n")
    ann = evaluate_model(ann_run.model, digits.test, 10, suite=str(suite), eps=0.1, n=16, progress=False)
    assert [a["estimators"] for a in ann.results["attacks"]] == [["native"], ["native"]]
    assert any("ANN" in note for note in ann.results["notes"])
    snn = evaluate_model(sigmoid_run.model, digits.test, 10, suite=str(suite), eps=0.1, n=16, progress=False)
    assert [a["estimators"] for a in snn.results["attacks"]] == [["triangle:1", "sigmoid:4", "ann"]] * 2


def test_checkpoints_and_configs_without_the_new_fields_load_as_before(sigmoid_run, tmp_path):
    ckpt = read_checkpoint(sigmoid_run.run_dir / "best.pt")
    old = {k: v for k, v in ckpt.items() if k not in ("format", "version", "sha256")}
    old["arch"] = {k: v for k, v in ckpt["arch"].items() if k not in ("estimator", "spiking")}
    old["config"] = {k: v for k, v in ckpt["config"].items() if k not in ("train_estimator", "network")}
    save_checkpoint(tmp_path / "old.pt", old)
    model, _ = load_model(tmp_path / "old.pt")
    assert is_spiking(model) and {layer.estimator.name for layer in spiking_layers(model)} == {"triangle:1"}
    cfg = config_from_dict({"dataset": "digits", "epochs": 1}).resolved()  # an old config.yaml
    assert (cfg.train_estimator, cfg.network) == ("triangle:1", "snn")


def test_a_config_file_sets_both_and_a_contradiction_there_is_refused(tmp_path, capsys):
    from spikeguard.config import load_config_file

    good = tmp_path / "good.yaml"
    good.write_text("dataset: digits\ntrain_estimator: atan\nnetwork: snn\n")
    cfg = config_from_dict(load_config_file(good)).resolved()
    assert (cfg.train_estimator, cfg.network) == ("atan:2", "snn") and cfg.to_record()["train_estimator"] == "atan:2"
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: digits\nnetwork: ann\ntau: 0.5\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "run"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tau applies to spiking networks only" in err
