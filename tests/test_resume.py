"""Crash-safe training: a run killed with SIGKILL and resumed ends bit for bit where an uninterrupted run ends.

The runs here use adversarial training with PGD random starts and a Poisson encoder, so the defense's private
generator, the data order and the global torch generator all have to come back for the weights to match.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from spikeguard.checkpoint import load_model, read_checkpoint, save_checkpoint
from spikeguard.cli import main
from spikeguard.config import config_from_dict
from spikeguard.training import epoch_order, train

REPO = Path(__file__).resolve().parents[1]
# digits: 1077 training images, 16 steps of 64 per epoch; checkpoints at steps 5, 10, 15 and at epoch ends.
FLAGS = ["--dataset", "digits", "--defense", "at", "--attack", "pgd", "--steps", "1", "--eps", "0.1", "--epochs", "2",
         "--time-steps", "2", "--batch-size", "64", "--checkpoint-every", "5", "--encoder", "poisson", "--no-progress"]
STEPS_PER_EPOCH = 16

# Runs the CLI and SIGKILLs itself at the start of training step KILL_AT (counted over the whole run):
# the kill lands at a known point, after work that the last checkpoint does not hold.
SELF_KILLING = """
import os, signal, sys
import spikeguard.training as t
from spikeguard.cli import main
real, calls = t.train_step, [0]
def step(*args):
    calls[0] += 1
    if calls[0] == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args)
t.train_step = step
sys.exit(main(sys.argv[1:]))
"""


def _config_from_flags(flags):
    values = {}
    for name, value in zip(flags[::2], flags[1::2]):
        values[name[2:].replace("-", "_")] = value
    return values


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def reference(tmp_path_factory, digits, one_thread):
    """The same run, never interrupted, in this process."""
    values = {"dataset": "digits", "defense": "at", "attack": "pgd", "steps": 1, "eps": 0.1, "epochs": 2,
              "time_steps": 2, "batch_size": 64, "checkpoint_every": 5, "encoder": "poisson"}
    assert _config_from_flags(FLAGS[:-1]) == {k: str(v) for k, v in values.items()}  # the two stay in step
    run = tmp_path_factory.mktemp("ref") / "run"
    train(config_from_dict(values), run, progress=False, data=digits)
    return run


def _metrics(run):
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for record in lines:
        record.pop("seconds")
    return lines


def _assert_same_run(run, reference):
    for name in ("last.pt", "best.pt"):
        got, want = read_checkpoint(run / name), read_checkpoint(reference / name)
        assert got["epoch"] == want["epoch"]
        assert got["model"].keys() == want["model"].keys()
        for key in want["model"]:
            assert torch.equal(got["model"][key], want["model"][key]), (name, key)
    got, want = read_checkpoint(run / "last.pt"), read_checkpoint(reference / "last.pt")
    for i, state in want["optimizer"]["state"].items():
        assert torch.equal(got["optimizer"]["state"][i]["momentum_buffer"], state["momentum_buffer"])
    assert _metrics(run) == _metrics(reference)  # every epoch once, same numbers


def _run_cli(run, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-c", SELF_KILLING, "train", *FLAGS, "--out", str(run)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_sigkill_mid_epoch_then_resume_is_bitwise(reference, tmp_path, capsys):
    run = tmp_path / "run"
    kill_at = STEPS_PER_EPOCH + 8  # epoch 2, step 8: three steps after the checkpoint at step 5
    proc = _run_cli(run, {"KILL_AT": str(kill_at)})
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    newest = read_checkpoint(run / "last.pt")
    assert (newest["epoch"], newest["step"]) == (1, 5)
    assert len(_metrics(run)) == 1
    stale = run / ".last.pt.x1y2.tmp"  # what a kill during a checkpoint write leaves behind
    stale.write_bytes(b"half a checkpoint")
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert not stale.exists()
    _assert_same_run(run, reference)


def test_sigkill_from_outside_then_resume_is_bitwise(reference, tmp_path):
    """A real outside kill, at whatever point the run has reached when its first checkpoint appears."""
    run = tmp_path / "run"
    proc = _run_cli(run, {"KILL_AT": "0"})  # never kills itself
    deadline = time.monotonic() + 300
    while not (run / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert read_checkpoint(run / "last.pt")["epoch"] < 2
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    _assert_same_run(run, reference)


def test_rotation_keeps_the_last_k_checkpoints(reference):
    names = sorted(p.name for p in reference.iterdir())
    assert names == ["best.pt", "config.yaml", "last.1.pt", "last.pt", "metrics.jsonl"]  # keep_checkpoints 2
    newest, older = read_checkpoint(reference / "last.pt"), read_checkpoint(reference / "last.1.pt")
    assert (newest["epoch"], newest["step"]) == (2, 0) and (older["epoch"], older["step"]) == (1, 15)
    assert older["order"] is not None and newest["order"] is None


def test_epoch_order_is_the_dataloader_order():
    """Resuming needs the order as a tensor; drawing it as DataLoader does keeps earlier runs' orders."""
    for batch_size, drop_last in ((16, True), (100, False)):
        ours, theirs = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        loader = DataLoader(list(range(100)), batch_size=batch_size, shuffle=True, drop_last=drop_last,
                            generator=theirs)
        for _ in range(3):
            seen = torch.cat(list(loader))
            assert torch.equal(seen, epoch_order(ours, 100)[:len(seen)])


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, digits, one_thread):
    run = tmp_path_factory.mktemp("short") / "run"
    train(config_from_dict({"epochs": 1, "time_steps": 2, "batch_size": 128}), run, progress=False, data=digits)
    return run


def test_resume_extends_a_finished_run_along_a_longer_schedule(short_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for p in short_run.iterdir():
        (run / p.name).write_bytes(p.read_bytes())
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    records = _metrics(run)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    # epoch 2 of a 3-epoch cosine schedule from lr 0.1: 0.1 * (1 + cos(pi / 3)) / 2
    assert records[1]["lr"] == pytest.approx(0.075)
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 3
    assert read_checkpoint(run / "last.pt")["epoch"] == 3


def _one_line_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1
    return err


def test_bad_resumes_are_one_line_errors(short_run, tmp_path, capsys):
    assert "fewer than the 1 epochs" in _one_line_error(capsys, ["train", "--resume", str(short_run), "--epochs", "0"])
    assert "not a run directory" in _one_line_error(capsys, ["train", "--resume", str(tmp_path)])
    assert "--lr cannot be changed" in _one_line_error(capsys, ["train", "--resume", str(short_run), "--lr", "0.5"])
    assert "--out" in _one_line_error(capsys, ["train", "--epochs", "1"])
    edited = tmp_path / "edited"
    edited.mkdir()
    for p in short_run.iterdir():
        (edited / p.name).write_bytes(p.read_bytes())
    cfg = yaml.safe_load((edited / "config.yaml").read_text())
    # (a field that applies to the run: lamb would not, for this vanilla run, and is not recorded)
    (edited / "config.yaml").write_text(yaml.safe_dump({**cfg, "lr": 0.5}))
    assert "differs from its checkpoint in lr" in _one_line_error(capsys, ["train", "--resume", str(edited)])


def test_fewer_epochs_than_finished_is_refused(short_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for p in short_run.iterdir():
        (run / p.name).write_bytes(p.read_bytes())
    ckpt = read_checkpoint(run / "last.pt")
    ckpt["epoch"] = 3  # as if three epochs were done
    save_checkpoint(run / "last.pt", {k: v for k, v in ckpt.items() if k not in ("format", "version", "sha256")})
    assert "fewer than the 3 epochs" in _one_line_error(capsys, ["train", "--resume", str(run), "--epochs", "2"])


def test_a_version_1_checkpoint_is_evaluable_but_not_resumable(short_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_bytes((short_run / "config.yaml").read_bytes())
    v2 = read_checkpoint(short_run / "last.pt")
    v1 = {"format": "spikeguard-checkpoint", "version": 1, "arch": v2["arch"], "dataset": "digits",
          "config": v2["config"], "model": v2["model"], "epoch": 1, "val_accuracy": v2["val_accuracy"]}
    torch.save(v1, run / "last.pt")
    assert "version-1 checkpoint: it can be evaluated but not resumed" in _one_line_error(
        capsys, ["train", "--resume", str(run)])
    model, ckpt = load_model(run / "last.pt")
    assert ckpt["version"] == 1
    assert all(torch.equal(v, v2["model"][k]) for k, v in model.state_dict().items())
