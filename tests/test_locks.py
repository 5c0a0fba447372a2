"""One writer per output (spikeguard.locks): a second run into the same --out stops in one line, a killed run's
lock is taken over by --resume, another host's only with --take-over-lock, and no lock outlives its run."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from spikeguard.cli import main
from spikeguard.config import config_from_dict
from spikeguard.errors import UserError
from spikeguard.locks import DIR_LOCK, claim, lock_path
from spikeguard.training import train

REPO = Path(__file__).resolve().parents[1]
QUICK = ["--suite", "quick", "--no-progress"]


def plant(target, *, directory=False, pid=None, host=None):
    """A lock as a run holding ``target`` leaves it (default: this live process on this host)."""
    lock = lock_path(target, directory)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"host": host or socket.gethostname(), "pid": os.getpid() if pid is None else pid,
                                "started": "2026-01-01T00:00:00+00:00", "command": "spikeguard ...",
                                "token": "planted"}))
    return lock


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def one_line_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, digits):
    run = tmp_path_factory.mktemp("locks") / "run"
    train(config_from_dict({"epochs": 1, "time_steps": 2, "batch_size": 128}), run, progress=False, data=digits)
    return run


def copy_run(run, to):
    to.mkdir()
    for p in run.iterdir():
        (to / p.name).write_bytes(p.read_bytes())
    return to


def test_a_held_output_refuses_a_second_claim_until_released(tmp_path):
    out = tmp_path / "r.json"
    with claim(out):
        lock = tmp_path / ".r.json.lock"
        record = json.loads(lock.read_text())
        assert record["host"] == socket.gethostname() and record["pid"] == os.getpid() and record["started"]
        with pytest.raises(UserError) as e:
            claim(out)
        message = str(e.value)
        assert "in use by another run" in message and f"pid {os.getpid()}" in message and str(lock) in message
        assert "\n" not in message
    assert not lock.exists()
    with claim(out):  # free again
        pass
    assert list(tmp_path.iterdir()) == []
    with claim(tmp_path / "new" / "folder" / "r.json"):  # as the results writer, into a folder yet to be made
        assert (tmp_path / "new" / "folder" / ".r.json.lock").is_file()


def test_the_lock_is_released_on_errors_and_interrupts_and_a_failed_check(tmp_path):
    for error in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(error), claim(tmp_path / "r.json"):
            raise error()
    assert list(tmp_path.iterdir()) == []

    def refuse():
        raise UserError("already exists")

    with pytest.raises(UserError, match="already exists"):
        claim(tmp_path / "run", directory=True, check=refuse)
    assert list(tmp_path.iterdir()) == []  # the directory the claim made is gone with it


def test_racing_claims_in_threads_one_wins(tmp_path):
    out, start, results = tmp_path / "run", threading.Barrier(8), []

    def race():
        start.wait()
        try:
            results.append(claim(out, directory=True))
        except UserError as e:
            results.append(str(e))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [r for r in results if not isinstance(r, str)]
    assert len(won) == 1 and all("in use by another run" in r for r in results if isinstance(r, str))
    won[0].release()
    assert not out.exists() or list(out.iterdir()) == []  # no lock left (an empty directory may be)


RACER = """
import sys, time
from spikeguard.errors import UserError
from spikeguard.locks import claim
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
try:
    held = claim(sys.argv[1], directory=True)
except UserError as e:
    print("lost:", e)
else:
    print("won")
    time.sleep(1.0)
    held.release()
"""


def test_racing_claims_in_processes_one_wins(tmp_path):
    out, at = tmp_path / "run", str(time.time() + 1.0)
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(out), at], cwd=REPO, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)}) for _ in range(4)]
    lines = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(line.split(":")[0] for line in lines) == ["lost"] * 3 + ["won"], lines
    assert all("in use by another run" in line for line in lines if line.startswith("lost"))
    assert not out.exists() or list(out.iterdir()) == []


def test_two_racing_train_runs_into_one_new_directory_one_wins(tmp_path, digits):
    out, start, results = tmp_path / "run", threading.Barrier(2), []
    cfg = config_from_dict({"epochs": 1, "time_steps": 2, "batch_size": 128})

    def race():
        start.wait()
        try:
            results.append(train(cfg, out, progress=False, data=digits))
        except UserError as e:
            results.append(str(e))

    threads = [threading.Thread(target=race) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lost = [r for r in results if isinstance(r, str)]
    assert len(results) == 2 and len(lost) == 1, results
    assert "in use by another run" in lost[0] or "already exists" in lost[0]
    assert {p.name for p in out.iterdir()} == {"config.yaml", "metrics.jsonl", "last.pt", "best.pt"}  # no lock


def test_a_second_process_into_a_held_output_fails_in_one_line(tmp_path):
    out = tmp_path / "r.json"
    lock = plant(out)  # held by this (live) process
    before = lock.read_text()
    proc = subprocess.run([sys.executable, "-m", "spikeguard", "evaluate", str(tmp_path / "missing.pt"), *QUICK,
                           "--out", str(out)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "in use by another run" in proc.stderr
    assert f"pid {os.getpid()}" in proc.stderr and str(lock) in proc.stderr
    assert lock.read_text() == before  # the holder's lock is left alone


def test_train_and_analyze_refuse_a_held_output(tmp_path, short_run, capsys):
    plant(tmp_path / "new", directory=True)
    assert "in use by another run" in one_line_error(capsys, ["train", "--dataset", "digits", "--epochs", "1",
                                                              "--out", str(tmp_path / "new"), "--no-progress"])
    plant(tmp_path / "analysis", directory=True)
    assert "in use by another run" in one_line_error(capsys, ["analyze", str(short_run), "--out",
                                                              str(tmp_path / "analysis"), "--no-progress"])
    assert [p.name for p in (tmp_path / "analysis").iterdir()] == [DIR_LOCK]


def test_resume_takes_over_a_dead_runs_lock_and_never_a_live_one(tmp_path, short_run, capsys):
    run = copy_run(short_run, tmp_path / "run")
    stale = run / ".last.pt.0123abcd.tmp"  # what a killed run leaves; resume removes it once it holds the lock
    stale.write_bytes(b"half")
    lock = plant(run, directory=True)
    assert "in use by another run" in one_line_error(capsys, ["train", "--resume", str(run), "--epochs", "2"])
    assert stale.exists() and json.loads(lock.read_text())["token"] == "planted"
    plant(run, directory=True, host="another-host.example")
    err = one_line_error(capsys, ["train", "--resume", str(run), "--epochs", "2"])
    assert "another host" in err and "--take-over-lock" in err
    plant(run, directory=True, pid=dead_pid())
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    assert not lock.exists() and not stale.exists()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_without_resume_a_dead_runs_lock_is_refused(tmp_path, capsys):
    out = tmp_path / "new"
    lock = plant(out, directory=True, pid=dead_pid())
    err = one_line_error(capsys, ["train", "--dataset", "digits", "--epochs", "1", "--out", str(out)])
    assert "gone" in err and str(lock) in err
    results = tmp_path / "r.json"
    plant(results, pid=dead_pid())
    assert "gone" in one_line_error(capsys, ["evaluate", "missing.pt", *QUICK, "--out", str(results)])


def test_another_hosts_lock_is_taken_over_only_with_the_flag(tmp_path, capsys):
    out = tmp_path / "r.json"
    lock = plant(out, host="another-host.example")
    argv = ["evaluate", str(tmp_path / "missing.pt"), *QUICK, "--out", str(out)]
    err = one_line_error(capsys, argv)
    assert "another host" in err and "another-host.example" in err and "--take-over-lock" in err
    assert lock.exists()
    # with the flag the claim passes and the run goes on (to the missing checkpoint), then lets go
    assert "does not exist" in one_line_error(capsys, argv + ["--take-over-lock"])
    assert not lock.exists() and list(tmp_path.iterdir()) == []


def test_a_corrupt_lock_is_one_line_naming_it(tmp_path, capsys):
    out = tmp_path / "r.json"
    lock = lock_path(out, directory=False)
    lock.write_text("{not json")
    err = one_line_error(capsys, ["evaluate", "missing.pt", *QUICK, "--out", str(out)])
    assert "not a spikeguard lock" in err and str(lock) in err


def test_a_failed_evaluate_leaves_no_lock(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert "does not exist" in one_line_error(capsys, ["evaluate", str(tmp_path / "missing.pt"), *QUICK,
                                                       "--out", str(out)])
    assert list(tmp_path.iterdir()) == []


def test_under_torchrun_only_rank_0_claims(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    plant(tmp_path / "r.json")  # held: rank 1 does not even look
    with claim(tmp_path / "r.json") as held:
        assert held.lock is None
