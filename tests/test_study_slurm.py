"""Studies on a real Slurm cluster (issue 24): the 2x2 plan of test_study.py submitted as a job array, reruns
that leave live jobs alone, a pending task and a running task killed with scancel, --wait with each cell's
news, resume, the report, and numbers equal to the local executor's; sbatch's refusals as one line; a job id
that names another job.

The cluster is the one SLURM_CONF names (.ci/run starts one with scripts/slurm_local.sh and exports it).
Without one these tests skip, with the reason; where CI is set they fail instead: CI must run them.
"""

import json
import os
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
from test_study import PLAN, numbers, run_cli, write_plan

from spikeguard.study import executors, slurm_jobs

pytestmark = pytest.mark.slurm


def _answers(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{command[0]}: {e}"
    return None if done.returncode == 0 else f"{' '.join(command)}: {(done.stderr or done.stdout).strip()[:200]}"


@pytest.fixture(scope="module")
def partition() -> str:
    """The cluster's default partition; a missing cluster skips (fails under CI)."""
    problem = None
    if not os.environ.get("SLURM_CONF"):
        problem = "SLURM_CONF is not set (scripts/slurm_local.sh start DIR prints it)"
    else:
        problem = (_answers(["sinfo", "--noheader", "--format=%P"]) or _answers(["squeue", "--noheader", "--me"])
                   or _answers(["sacct", "--noheader", "--allocations", "--starttime=now-1minute"]))
    if problem:
        message = f"no Slurm cluster with accounting reachable: {problem}"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the slurm tests (.ci/run starts a cluster)")
        pytest.skip(message)
    names = subprocess.run(["sinfo", "--noheader", "--format=%P"], capture_output=True, text=True).stdout.split()
    return next((n.rstrip("*") for n in names if n.endswith("*")), names[0])


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The plan and its numbers from the local executor."""
    root = tmp_path_factory.mktemp("slurm-study")
    plan = write_plan(root, PLAN)
    code, _, err = run_cli(["study", plan, "--out", root / "local", "--quiet"])
    assert code == 0, err
    return plan, numbers(root / "local")


@pytest.fixture
def quick(monkeypatch):
    """Look at the jobs often, and fail a vanished one after 3 s instead of minutes."""
    monkeypatch.setattr(executors, "POLL_S", 0.5)
    monkeypatch.setattr(slurm_jobs, "MISSING_GRACE_S", 3.0)


def records(study: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((study / "cells").glob("*.json"))}


def squeue_ids() -> list[str]:
    out = subprocess.run(["squeue", "--noheader", "--array", "--me", "--format=%i"], capture_output=True, text=True)
    return out.stdout.split()


def wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, f"{what} did not happen within {seconds} s"
        time.sleep(0.1)


def test_a_study_on_slurm_survives_reruns_kills_and_resumes_with_the_local_numbers(partition, local, quick,
                                                                                   tmp_path, monkeypatch):
    plan, expected = local
    study = tmp_path / "cluster"
    cells = list(expected)
    # 1. submit: no --gpus-per-cell, no --device; a partition without GPUs gets none
    code, _, err = run_cli(["study", plan, "--out", study, "--executor", "slurm", "--partition", partition, "-q"])
    assert code == 0, err
    jobs = {cell: r["job"] for cell, r in records(study).items()}
    array = jobs[cells[0]].split("_")[0]
    assert sorted(jobs.values()) == [f"{array}_{k}" for k in range(4)]
    assert "--gpus" not in next((study / "submitit").glob("*_submission.sh")).read_text()
    # 2. reruns a moment later, under both executors, neither submit nor run anything (UNKNOWN is no end)
    for executor in (["--executor", "slurm"], []):
        code, _, err = run_cli(["study", study, *executor])
        assert code == 0 and "4 still queued or running on Slurm, 0 to run" in err, err
    assert {c: r.get("job") for c, r in records(study).items()} == jobs
    assert all(job.startswith(f"{array}_") for job in squeue_ids())
    # ... also where sacct cannot answer (squeue alone), and where nothing can: then nothing runs either
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("sacct", "squeue"):
        (fake / name).write_text("#!/bin/sh\necho 'Slurm accounting storage is disabled' >&2\nexit 1\n")
        (fake / name).chmod(0o755)
    with monkeypatch.context() as patch:
        patch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
        (fake / "squeue").rename(fake / "squeue.off")
        code, _, err = run_cli(["study", study])
        assert code == 0 and "0 to run" in err and "cannot be checked" not in err, err
        (fake / "squeue.off").rename(fake / "squeue")
        code, _, err = run_cli(["study", study])
        assert code == 0 and "cannot be checked here" in err and "0 to run" in err, err
    code, out, _ = run_cli(["study", study, "--status"])
    assert code == 0 and out.count("│ queued") + out.count("│ running") + out.count("│ done") == 4, out
    # 3. cancel a pending task (Slurm keeps no record of it), kill a running one: that cell records why, and
    #    study.json says so without anyone asking
    assert f"{array}_3" in squeue_ids()
    subprocess.run(["scancel", jobs[cells[3]]], check=True)
    wait_until(lambda: records(study)[cells[0]]["status"] == "running", 60, f"{cells[0]} running")
    subprocess.run(["scancel", jobs[cells[0]]], check=True)
    shown = lambda: {c["id"]: c for c in json.loads((study / "study.json").read_text())["cells"]}  # noqa: E731
    wait_until(lambda: shown()[cells[0]]["status"] == "failed", 60, "study.json showing the killed cell")
    assert "Slurm stopped the job" in shown()[cells[0]]["reason"]
    # 4. --wait: the killed cell is submitted again; each cell's end is news as it comes; the task cancelled
    #    while pending fails after the grace, with the reason
    started = time.time()
    code, _, err = run_cli(["study", study, "--executor", "slurm", "--wait"])
    assert code == 0, err
    counted = re.search(r"(\d) finished before, (\d) still queued or running on Slurm, 1 to run", err)
    assert counted and int(counted[1]) + int(counted[2]) == 3, err  # (cells 1 and 2 may have ended already)
    for cell, record in records(study).items():  # news of every cell that had not ended before
        ended = datetime.fromisoformat(record.get("finished", "9999-01-01T00:00:00+00:00")).timestamp()
        assert f"cell {cell}: " in err or ended <= started + 1, (cell, err)
    assert f"cell {cells[0]}: done" in err and f"cell {cells[3]}: failed" in err, err
    assert f"Slurm job {jobs[cells[3]]} is in neither squeue nor sacct" in shown()[cells[3]]["reason"]
    assert json.loads((study / "study.json").read_text())["counts"] == {"done": 3, "failed": 1}
    # 5. resume: the rest runs; every number equals the local executor's
    code, _, err = run_cli(["study", study, "--executor", "slurm", "--wait", "-q"])
    assert code == 0, err
    assert json.loads((study / "study.json").read_text())["counts"] == {"done": 4}
    assert numbers(study) == expected
    code, out, err = run_cli(["report", study])
    assert code == 0 and (study / "summary.md").is_file(), err


def test_wait_stops_at_its_limit_and_the_jobs_go_on(partition, local, tmp_path):
    plan, _ = local
    study = tmp_path / "limit"
    code, _, err = run_cli(["study", plan, "--out", study, "--executor", "slurm", "--partition", partition,
                            "--wait", "--wait-timeout", "0"])
    jobs = sorted(r["job"] for r in records(study).values())
    subprocess.run(["scancel", jobs[0].split("_")[0]], check=True)
    assert code == 0 and "stopped waiting after 0 min; 4 cell(s) still on Slurm" in err, err


@pytest.mark.parametrize("flags, words", [
    (["--gpus-per-cell", "1"], "generic resource"),
    (["--partition", "no-such-partition"], "partition"),
])
def test_an_sbatch_refusal_is_one_line(partition, local, tmp_path, flags, words):
    plan, _ = local
    code, _, err = run_cli(["study", plan, "--out", tmp_path / "s", "--executor", "slurm", "--partition", partition,
                            *flags, "-q"])
    assert code == 2 and "sbatch refused the array" in err and words in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_a_slurm_conf_without_a_cluster_is_one_line(partition, local, tmp_path, monkeypatch):
    plan, _ = local
    (tmp_path / "empty.conf").write_text("")  # (an unset SLURM_CONF makes sbatch ask DNS, a minute offline)
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "empty.conf"))
    code, _, err = run_cli(["study", plan, "--out", tmp_path / "s", "--executor", "slurm", "--partition", partition,
                            "--gpus-per-cell", "0", "-q"])
    assert code == 2 and "sbatch refused the array: Unable to process configuration file" in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_a_job_id_that_now_names_another_job_is_not_trusted(partition, local, tmp_path):
    """A cluster whose state was wiped gives old job ids to new jobs: the cell is not left to a stranger."""
    plan, _ = local
    study = tmp_path / "wiped"
    code, _, err = run_cli(["study", plan, "--out", study, "--executor", "slurm", "--partition", partition,
                            "--dry-run", "-q"])
    assert code == 0, err
    stranger = subprocess.run(["sbatch", "--parsable", "--job-name=someone-else", f"--partition={partition}",
                               "--output=/dev/null", "--wrap=sleep 60"], capture_output=True, text=True, check=True)
    job = stranger.stdout.strip().split(";")[0]
    try:
        cell = "defense-vanilla_seed-0"
        (study / "cells" / f"{cell}.json").write_text(json.dumps({"id": cell, "status": "queued", "job": job}))
        code, out, _ = run_cli(["study", study, "--status"])
        assert code == 0, out
        record = records(study)[cell]
        assert record["status"] == "failed" and "now names job 'someone-else'" in record["reason"], record
    finally:
        subprocess.run(["scancel", job])
