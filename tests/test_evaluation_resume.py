"""evaluate --resume: a run killed with SIGKILL keeps its finished batches, and resuming it gives the
results of a run never interrupted (timings aside)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spikeguard.cli import main

REPO = Path(__file__).resolve().parent.parent
SUITE = ("name: slowish\ncascade: true\nchecks: {unbounded_n: 8, unbounded_steps: 5}\nattacks:\n"
         "  - {attack: pgd, steps: 30, estimators: [triangle:1, atan:2]}\n  - {attack: random-sign, draws: 2}\n")
TIMING = ("seconds",)


def evaluate_argv(run, suite, out, *extra):
    return ["evaluate", str(run), "--suite", str(suite), "--n", "48", "--batch-size", "4", "--eps", "0.1",
            "--out", str(out), "--no-progress", *extra]


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING and k != "per_sample"}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "run"
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--time-steps", "2", "--out", str(out),
                 "--no-progress"]) == 0
    return out


def test_a_killed_evaluation_resumes_to_the_uninterrupted_result(run, tmp_path, capsys):
    suite = tmp_path / "slowish.yaml"
    suite.write_text(SUITE)
    whole, resumed = tmp_path / "whole.json", tmp_path / "resumed.json"
    assert main(evaluate_argv(run, suite, whole)) == 0
    kept = tmp_path / ".resumed.json.batches"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "spikeguard", *evaluate_argv(run, suite, resumed)], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(kept.glob("batch-*.json"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(kept.glob("batch-*.json")))
    assert 3 <= finished < 12 and not resumed.exists(), f"killed too late or too early ({finished} batches)"
    capsys.readouterr()
    # without --resume nothing already done is thrown away, and the user is told how to go on
    assert main(evaluate_argv(run, suite, resumed)) == 2
    assert "--resume" in capsys.readouterr().err
    # other settings cannot resume it
    assert main(evaluate_argv(run, suite, resumed, "--seed", "3", "--resume")) == 2
    assert "other settings" in capsys.readouterr().err
    assert main(evaluate_argv(run, suite, resumed, "--resume")) == 0
    assert not kept.exists()
    assert resumed.with_suffix(".csv").read_text() == whole.with_suffix(".csv").read_text()
    assert without_timings(json.loads(resumed.read_text())) == without_timings(json.loads(whole.read_text()))
    assert main(evaluate_argv(run, suite, resumed, "--resume")) == 2  # finished: nothing to resume
    assert "nothing to resume" in capsys.readouterr().err


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raising KeyboardInterrupt, as on a terminal. A process started in the background by a
    non-interactive shell (`cmd &`) inherits SIGINT ignored, and Python then installs no handler: the
    interrupt tests would see no Ctrl-C at all."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _signal_when(condition, signum=signal.SIGINT, timeout=120.0):
    """A thread that sends this process ``signum`` (Ctrl-C by default) once ``condition()`` holds."""
    import threading

    def watch():
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)
        if condition():
            os.kill(os.getpid(), signum)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_ctrl_c_on_evaluate_says_what_it_kept_and_its_resume_command_finishes_it(run, tmp_path, capsys,
                                                                                 ctrl_c_raises):
    import shlex

    suite = tmp_path / "slowish.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "stopped.json"
    kept = tmp_path / ".stopped.json.batches"
    watcher = _signal_when(lambda: len(list(kept.glob("batch-*.json"))) >= 2)
    code = main(evaluate_argv(run, suite, out, "--seed", "0"))
    watcher.join()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 130 and not out.exists(), line
    finished = len(list(kept.glob("batch-*.json")))
    assert line.startswith(f"evaluation into {out} interrupted (Ctrl-C): {finished} finished batch(es) kept in {kept}; "
                           "resume with: spikeguard evaluate "), line
    again = shlex.split(line.split("resume with: ")[1])
    assert again[-1] == "--resume" and "--no-progress" in again
    assert main(again[1:]) == 0 and out.exists() and not kept.exists()


def test_sigterm_in_a_resumable_block_exits_143_with_its_line(capsys):
    import typer

    from spikeguard.commands.interrupts import resumable

    with pytest.raises(typer.Exit) as stopped:
        with resumable("job", lambda: "3 things kept", lambda: "resume with: spikeguard job"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
    assert stopped.value.exit_code == 143
    assert capsys.readouterr().err.strip() == "job interrupted (SIGTERM): 3 things kept; resume with: spikeguard job"
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None) or callable(signal.getsignal(signal.SIGTERM))


def test_ctrl_c_on_train_names_the_kept_epoch_and_the_resume_command(tmp_path, capsys, ctrl_c_raises):
    out = tmp_path / "run"
    watcher = _signal_when(lambda: (out / "last.pt").exists())
    code = main(["train", "--dataset", "digits", "--epochs", "6", "--time-steps", "2", "--out", str(out),
                 "--no-progress"])
    watcher.join()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 130, line
    import torch

    epoch = torch.load(out / "last.pt", weights_only=False)["epoch"]
    assert 1 <= epoch < 6
    assert line == (f"training of {out} interrupted (Ctrl-C): checkpoint {out / 'last.pt'} kept (after epoch "
                    f"{epoch}); resume with: spikeguard train --resume {out}"), line


FGSM_ONLY = "name: fgsm-only\ncascade: true\nattacks:\n  - {attack: fgsm, estimators: [triangle:1]}\n"


def test_evaluating_a_run_still_training_warns_and_records_the_checkpoint_epoch(run, tmp_path, capsys):
    from spikeguard.locks import claim
    from spikeguard.schema import read_results

    suite = tmp_path / "fgsm.yaml"
    suite.write_text(FGSM_ONLY)
    argv = ["evaluate", str(run), "--suite", str(suite), "--n", "4", "--eps", "0.1", "--no-progress"]
    held = claim(run, directory=True)  # as the training process holds it
    try:
        assert main([*argv, "--out", str(tmp_path / "during.json")]) == 0
    finally:
        held.release()
    err = capsys.readouterr().err
    assert (f"warning: run '{run}' is still training (process {os.getpid()} holds its lock): attacking the "
            "checkpoint of epoch 1, not the finished run") in err
    assert read_results(tmp_path / "during.json").checkpoint_epoch == 1
    assert main([*argv, "--out", str(tmp_path / "after.json")]) == 0
    assert "still training" not in capsys.readouterr().err  # no lock held: no warning


def test_n_above_the_test_split_is_said_and_kept_in_the_notes(run, tmp_path, capsys):
    from spikeguard.schema import read_results

    suite = tmp_path / "fgsm.yaml"
    suite.write_text(FGSM_ONLY)
    out = tmp_path / "all.json"
    assert main(["evaluate", str(run), "--suite", str(suite), "--n", "5000", "--eps", "0.1", "--no-progress",
                 "--out", str(out)]) == 0
    record = read_results(out)
    note = f"n 5000 asked for more samples than the test split holds ({record.n}): all {record.n} were evaluated"
    assert record.n < 5000 and note in record.notes
    captured = capsys.readouterr()
    assert f"note: {note}" in captured.err and f"note: {note}" in captured.out  # at once, and with the table


def test_first_n_samples_that_leave_out_classes_are_said_in_the_notes(run, tmp_path):
    """mnist5k's file was stored class by class, so "the first 50" were all zeros: a number about one class
    must say so. Three digits test images cannot hold ten classes; the whole split holds them all."""
    from spikeguard.schema import read_results

    suite = tmp_path / "fgsm.yaml"
    suite.write_text(FGSM_ONLY)
    for n, expect in (("3", True), ("5000", False)):
        out = tmp_path / f"n{n}.json"
        assert main(["evaluate", str(run), "--suite", str(suite), "--n", n, "--eps", "0.1", "--no-progress",
                     "--out", str(out)]) == 0
        notes = [note for note in read_results(out).notes if "of the split's 10 classes" in note]
        assert bool(notes) == expect, notes


def test_missing_classes_note_reads_labels_of_each_kind_of_split():
    import torch

    from spikeguard.data.class_coverage import missing_classes_note
    from spikeguard.data.splits import ImageDataset

    images, labels = torch.zeros(20, 1, 2, 2), torch.arange(20) // 4  # five classes, stored class by class
    sorted_split = ImageDataset(images, labels, torch.arange(20))
    note = missing_classes_note(8, sorted_split)
    assert note is not None and "2 of the split's 5 classes (missing: 2, 3, 4)" in note
    mixed = ImageDataset(images, labels, torch.arange(20).reshape(5, 4).T.reshape(-1))  # 0, 4, 8, ... first
    assert missing_classes_note(5, mixed) is None and missing_classes_note(None, sorted_split) is None
    assert "missing: 1, 2, 3, 4" in missing_classes_note(3, torch.utils.data.Subset(sorted_split, range(20)))

    class Targets(torch.utils.data.Dataset):  # torchvision's datasets carry their labels as ``targets``
        targets = [0, 0, 1, 1]

        def __len__(self):
            return 4

    assert "missing: 1" in missing_classes_note(2, Targets())
