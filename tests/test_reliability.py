"""Faults a long run or a downloaded file can bring: malicious, truncated, damaged or foreign checkpoints, a
full disk, SIGKILL during a checkpoint write, NaN and inf in training, and runs that collapse."""

import dataclasses
import errno
import io
import json
import logging
import os
import pickle
import shlex
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import tiny_spec

import spikeguard.config as config_module
import spikeguard.files as files_module
import spikeguard.training as train_module
from spikeguard.checkpoint import (
    latest_resumable,
    read_checkpoint,
    save_checkpoint,
    save_rotating,
)
from spikeguard.cli import main
from spikeguard.config import config_from_dict
from spikeguard.data.splits import ImageDataset
from spikeguard.errors import UserError
from spikeguard.models import create_model
from spikeguard.training import epoch_order, train

REPO = Path(__file__).resolve().parents[1]
FAST = {"epochs": 1, "time_steps": 2, "batch_size": 64}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def one_line_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def tiny_checkpoint(path, **changes):
    model = create_model(tiny_spec())
    payload = {"arch": tiny_spec().to_dict(), "dataset": "digits", "config": {"eps": 0.1},
               "model": model.state_dict(), "epoch": 1, "val_accuracy": 0.5, **changes}
    save_checkpoint(path, payload)
    return model


# ------------------------------------------------------------------------------------------ safe loading

class RunsCode:
    """Unpickling this runs a shell command: what a malicious checkpoint would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def _malicious(path: Path, marker: Path, layout: str) -> bytes:
    evil = pickle.dumps({"format": "spikeguard-checkpoint", "version": 2, "model": RunsCode(marker)}, protocol=2)
    if layout == "raw":
        path.write_bytes(evil)
        return evil
    # torch.save's zip layout with the pickle inside replaced
    buffer = io.BytesIO()
    torch.save({"format": "spikeguard-checkpoint"}, buffer)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w") as target:
        for name in source.namelist():
            target.writestr(name, evil if name.endswith("data.pkl") else source.read(name))
    return evil


@pytest.mark.parametrize("layout", ["zip", "raw"])
def test_a_checkpoint_that_would_run_code_is_refused_and_the_code_never_runs(tmp_path, capsys, layout):
    marker, control = tmp_path / "pwned", tmp_path / "control"
    _malicious(tmp_path / "evil.pt", marker, layout)
    pickle.loads(pickle.dumps(RunsCode(control), protocol=2))  # the payload is live ...
    assert control.exists()
    err = one_line_error(capsys, ["evaluate", str(tmp_path / "evil.pt"), "--suite", "quick",
                                  "--out", str(tmp_path / "r.json")])
    assert "refusing to load" in err and "could run code" in err
    run = tmp_path / "run"  # ... and as a run's newest checkpoint, which --resume reads
    run.mkdir()
    (run / "config.yaml").write_text("dataset: digits\n")
    (run / "last.pt").write_bytes((tmp_path / "evil.pt").read_bytes())
    assert "refusing to load" in one_line_error(capsys, ["train", "--resume", str(run)])
    assert not marker.exists()  # ... but never ran here


def test_a_truncated_checkpoint_is_refused(tmp_path, capsys):
    tiny_checkpoint(tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    err = one_line_error(capsys, ["evaluate", str(tmp_path / "cut.pt"), "--suite", "quick",
                                  "--out", str(tmp_path / "r.json")])
    assert "perhaps truncated" in err


def test_a_flipped_bit_in_the_weights_fails_the_checksum(tmp_path, capsys):
    """torch.load does not notice (its zip reader skips CRCs); the stored sha256 does."""
    model = tiny_checkpoint(tmp_path / "good.pt")
    weight = max(model.state_dict().values(), key=torch.Tensor.numel)
    data = bytearray((tmp_path / "good.pt").read_bytes())
    at = data.find(weight.numpy().tobytes())
    assert at > 0
    data[at + weight.numel() * 2] ^= 0x10  # a bit in the middle of the largest weight
    (tmp_path / "bad.pt").write_bytes(bytes(data))
    assert torch.load(tmp_path / "bad.pt", weights_only=True)["model"]  # loads without complaint
    with pytest.raises(UserError, match="fails its checksum"):
        read_checkpoint(tmp_path / "bad.pt")
    err = one_line_error(capsys, ["evaluate", str(tmp_path / "bad.pt"), "--suite", "quick",
                                  "--out", str(tmp_path / "r.json")])
    assert "checksum" in err


def test_a_checkpoint_of_another_architecture_is_refused_before_loading(tmp_path, capsys):
    other = tiny_spec(num_classes=5).to_dict()  # claims 5 classes, holds 10-class weights
    tiny_checkpoint(tmp_path / "other.pt", arch=other)
    err = one_line_error(capsys, ["evaluate", str(tmp_path / "other.pt"), "--suite", "quick",
                                  "--out", str(tmp_path / "r.json")])
    assert "do not fit" in err and "of another shape" in err


# ------------------------------------------------------------------------------------------- full disk

def _full_disk(after_bytes: int, only: str = ""):
    """An ``open`` for spikeguard.checkpoint whose files take ``after_bytes`` and then report ENOSPC, as a
    real write to a full disk does (part of the data lands, then the write fails)."""
    real_open = open

    class FullDisk(io.FileIO):
        written = 0

        def write(self, data):
            if FullDisk.written + len(data) > after_bytes:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            FullDisk.written += len(data)
            return super().write(data)

    def fake_open(path, mode="r", *args, **kwargs):
        if "w" in mode and only in Path(path).name:
            return FullDisk(path, "w")
        return real_open(path, mode, *args, **kwargs)

    return fake_open


def test_a_full_disk_fails_cleanly_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = create_model(tiny_spec())
    first = {"arch": tiny_spec().to_dict(), "dataset": "digits", "model": model.state_dict(), "epoch": 1, "step": 0}
    save_rotating(tmp_path, first, keep=2)
    monkeypatch.setattr(files_module, "open", _full_disk(4096), raising=False)
    with pytest.raises(UserError) as err:
        save_rotating(tmp_path, {**first, "epoch": 2}, keep=2)
    assert "No space left on device" in str(err.value) and "\n" not in str(err.value)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left, nothing rotated
    assert read_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def test_a_full_disk_mid_training_stops_with_one_line_and_the_run_resumes(tmp_path, capsys, monkeypatch, digits):
    flags = ["--dataset", "digits", "--epochs", "1", "--time-steps", "2", "--batch-size", "64",
             "--checkpoint-every", "4", "--no-progress"]
    reference = tmp_path / "reference"
    train(config_from_dict({**FAST, "checkpoint_every": 4}), reference, progress=False, data=digits)
    writes = {"n": 0}
    full_disk = _full_disk(4096, only=".last.pt.")

    def second_checkpoint_fails(path, mode="r", *args, **kwargs):
        if "w" in mode and ".last.pt." in Path(path).name:
            writes["n"] += 1
            if writes["n"] == 2:
                return full_disk(path, mode)
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(files_module, "open", second_checkpoint_fails, raising=False)
    run = tmp_path / "run"
    err = one_line_error(capsys, ["train", *flags, "--out", str(run)])
    assert "No space left on device" in err and f"--resume {run}" in err
    monkeypatch.undo()
    assert read_checkpoint(run / "last.pt")["step"] == 4
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    want = read_checkpoint(reference / "last.pt")["model"]
    got = read_checkpoint(run / "last.pt")["model"]
    assert all(torch.equal(got[k], v) for k, v in want.items())


def test_resume_takes_the_newest_checkpoint_that_verifies(tmp_path, caplog):
    """A kill between the renames of a rotation leaves no last.pt; a damaged newest file is passed over."""
    weights = {"w": torch.zeros(3)}
    for step in (1, 2, 3):
        save_rotating(tmp_path, {"arch": {}, "dataset": "digits", "model": weights, "epoch": 0, "step": step,
                                 "rng": {}}, keep=3)
    data = bytearray((tmp_path / "last.pt").read_bytes())
    (tmp_path / "last.pt").write_bytes(bytes(data[: len(data) // 2]))
    with caplog.at_level(logging.WARNING, logger="spikeguard.checkpoint"):
        path, ckpt = latest_resumable(tmp_path)
    assert (path.name, ckpt["step"]) == ("last.1.pt", 2)
    assert any("skipping" in r.message and "last.pt" in r.message for r in caplog.records)
    (tmp_path / "last.pt").unlink()
    assert latest_resumable(tmp_path)[1]["step"] == 2


# ------------------------------------------------------------------------- SIGKILL during a checkpoint write

KILLED_MID_WRITE = """
import io, os, signal, sys, torch
import spikeguard.checkpoint as c
import spikeguard.files as files
run = sys.argv[1]
def payload(i):
    return {"arch": {}, "dataset": "digits", "model": {"w": torch.full((1 << 20,), float(i))}, "epoch": i, "step": 0}
c.save_rotating(run, payload(1), keep=1)
class Dies(io.FileIO):
    written = 0
    def write(self, data):
        Dies.written += len(data)
        if Dies.written > (1 << 20):  # a quarter of the 4 MiB tensor is on disk
            os.kill(os.getpid(), signal.SIGKILL)
        return super().write(data)
files.open = lambda path, mode="r", *a, **k: Dies(path, "w") if "w" in mode else open(path, mode, *a, **k)
c.save_rotating(run, payload(2), keep=1)
"""


def test_sigkill_in_the_middle_of_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    proc = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(tmp_path)], cwd=REPO, capture_output=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-500:]
    partial = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < 4 << 20  # killed mid-write
    ckpt = read_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 1 and torch.equal(ckpt["model"]["w"], torch.full((1 << 20,), 1.0))


WRITES_IN_A_LOOP = """
import sys, torch
import spikeguard.checkpoint as c
w = torch.zeros(1 << 21)
for i in range(1, 100000):
    w.fill_(i)
    c.save_rotating(sys.argv[1], {"arch": {}, "dataset": "digits", "model": {"w": w}, "epoch": i, "step": 0}, keep=2)
    print(i, flush=True)
"""


def test_sigkill_from_outside_while_writing_checkpoints_in_a_loop(tmp_path):
    """The kill lands wherever the loop is, almost always inside a write (8 MiB + fsync + hash)."""
    proc = subprocess.Popen([sys.executable, "-c", WRITES_IN_A_LOOP, str(tmp_path)], cwd=REPO,
                            stdout=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    for _ in range(3):
        proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    for name in ("last.pt", "last.1.pt"):
        ckpt = read_checkpoint(tmp_path / name)  # verified: complete and unchanged
        assert torch.equal(ckpt["model"]["w"], torch.full((1 << 21,), float(ckpt["epoch"])))
    assert read_checkpoint(tmp_path / "last.pt")["epoch"] == read_checkpoint(tmp_path / "last.1.pt")["epoch"] + 1


# ---------------------------------------------------------------------------------------- NaN and inf

def _poisoned(digits, count=5):
    """The digits splits with the first ``count`` training images set to NaN."""
    train_set = digits.train
    images = train_set.images.clone()
    images[train_set.indices[:count]] = float("nan")
    return dataclasses.replace(digits, train=ImageDataset(images, train_set.labels, train_set.indices))


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_nan_input_under_skip_skips_exactly_the_poisoned_batches(digits, tmp_path, caplog):
    order = epoch_order(torch.Generator().manual_seed(0), len(digits.train))
    steps = len(digits.train) // 64
    poisoned_batches = sum(bool((order[i * 64:(i + 1) * 64] < 5).any()) for i in range(steps))
    assert poisoned_batches >= 1
    with caplog.at_level(logging.WARNING, logger="spikeguard.training"):
        result = train(config_from_dict({**FAST, "nan_policy": "skip"}), tmp_path / "run", progress=False,
                       data=_poisoned(digits))
    assert _metrics(tmp_path / "run")[0]["skipped_steps"] == poisoned_batches
    assert sum("the input batch holds NaN" in r.message and "skipped" in r.message
               for r in caplog.records) == poisoned_batches
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_nan_input_under_rollback_aborts_because_a_rollback_would_replay_it(digits, tmp_path):
    with pytest.raises(UserError, match="replay the same batch"):
        train(config_from_dict({**FAST, "nan_policy": "rollback"}), tmp_path / "run", progress=False,
              data=_poisoned(digits))


class _NanGradient(torch.autograd.Function):
    """Identity forward, NaN backward: a finite loss with non-finite gradients."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def _faulty_defense(monkeypatch, fault_calls, kind="loss"):
    """Make the defense's loss (or its gradients) NaN on the given 1-based calls."""
    real_create = train_module.create_defense
    calls = {"n": 0}

    def create(*args, **kwargs):
        defense = real_create(*args, **kwargs)
        real_loss = defense.loss

        def loss(model, x, y):
            calls["n"] += 1
            value, parts = real_loss(model, x, y)
            if calls["n"] in fault_calls:
                value = value * float("nan") if kind == "loss" else _NanGradient.apply(value)
            return value, parts

        defense.loss = loss
        return defense

    monkeypatch.setattr(train_module, "create_defense", create)
    return calls


def test_a_transient_nan_loss_under_rollback_restores_the_checkpoint_and_halves_the_lr(digits, tmp_path,
                                                                                       monkeypatch, caplog):
    calls = _faulty_defense(monkeypatch, {7})  # step 7; the checkpoint is at step 4
    with caplog.at_level(logging.WARNING, logger="spikeguard.training"):
        train(config_from_dict({**FAST, "nan_policy": "rollback", "checkpoint_every": 4}), tmp_path / "run",
              progress=False, data=digits)
    assert calls["n"] == 16 + 3  # 16 steps, and steps 5 to 7 again after the rollback
    record = _metrics(tmp_path / "run")[0]
    assert record["rollbacks"] == 1 and record["lr"] == pytest.approx(0.05) and record["skipped_steps"] == 0
    (line,) = [r.message for r in caplog.records if "rollback" in r.message]
    assert "rollback 1/3" in line and "loss is nan" in line and "last.pt (epoch 0, step 4)" in line


def test_a_persistent_nan_loss_aborts_after_max_rollbacks(digits, tmp_path, monkeypatch):
    _faulty_defense(monkeypatch, set(range(3, 1000)))
    with pytest.raises(UserError, match="after 2 rollbacks") as err:
        train(config_from_dict({**FAST, "nan_policy": "rollback", "max_rollbacks": 2}), tmp_path / "run",
              progress=False, data=digits)
    assert "\n" not in str(err.value)


def test_nan_gradients_are_caught_though_the_loss_is_finite(digits, tmp_path, monkeypatch, caplog):
    _faulty_defense(monkeypatch, {3}, kind="gradient")
    with caplog.at_level(logging.WARNING, logger="spikeguard.training"):
        train(config_from_dict({**FAST, "nan_policy": "skip"}), tmp_path / "run", progress=False, data=digits)
    assert _metrics(tmp_path / "run")[0]["skipped_steps"] == 1
    assert any("epoch 1 step 3: the gradients hold NaN" in r.message for r in caplog.records)


def test_skip_gives_up_after_ten_faulty_steps_in_a_row(digits, tmp_path, monkeypatch):
    _faulty_defense(monkeypatch, set(range(2, 1000)))
    with pytest.raises(UserError, match="10 steps in a row"):
        train(config_from_dict({**FAST, "nan_policy": "skip"}), tmp_path / "run", progress=False, data=digits)


def test_abort_is_the_default_and_says_how_to_continue(digits, tmp_path, monkeypatch):
    _faulty_defense(monkeypatch, {2})
    with pytest.raises(UserError, match="diverged at epoch 1 step 2: the loss is nan") as err:
        train(config_from_dict(FAST), tmp_path / "run", progress=False, data=digits)
    assert "--resume" in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------------- collapsed runs

def test_sr_with_a_tiny_h_is_refused_up_front(capsys, tmp_path):
    err = one_line_error(capsys, ["train", "--defense", "sr", "--lamb", "0.03", "--h", "1e-12",
                                  "--out", str(tmp_path / "run")])
    assert "h must lie in [0.001, 1]" in err


def test_a_penalty_that_is_identically_zero_stops_the_run(digits, tmp_path, monkeypatch):
    """Without the up-front bound, h = 1e-12 flips no spike: SR would silently train as vanilla."""
    monkeypatch.setitem(config_module.RANGES, "h", (0.0, 1.0, ""))
    with pytest.raises(UserError, match="penalty was exactly 0"):
        train(config_from_dict({**FAST, "defense": "sr", "lamb": 0.03, "h": 1e-12}), tmp_path / "run",
              progress=False, data=digits)
    assert _metrics(tmp_path / "run")[0]["penalty"] == 0.0


def test_a_too_large_lambda_is_caught_as_a_collapse(digits, tmp_path):
    with pytest.raises(UserError, match="collapsed at epoch 1.*at chance.*cross-entropy"):
        train(config_from_dict({**FAST, "defense": "sr", "lamb": 1.0}), tmp_path / "run", progress=False,
              data=digits)
    assert (tmp_path / "run" / "best.pt").is_file()


def test_a_fall_to_chance_after_learning_is_caught(digits, tmp_path, monkeypatch):
    real_accuracy = train_module.accuracy
    epochs = iter([1, 2])
    monkeypatch.setattr(train_module, "accuracy", lambda *a: real_accuracy(*a) if next(epochs) == 1 else 0.1)
    with pytest.raises(UserError, match="collapsed at epoch 2: validation accuracy 0.100 fell to chance"):
        train(config_from_dict({**FAST, "epochs": 2}), tmp_path / "run", progress=False, data=digits)
    assert read_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == 1
    assert [r["epoch"] for r in _metrics(tmp_path / "run")] == [1, 2]
