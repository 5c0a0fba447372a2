"""What Slurm says about a study's jobs, and what that means for their cells (no PyTorch here).

Two sources, asked once per look for all of a study's jobs: ``squeue`` (what the controller holds: queued and
running tasks, and ended ones for a few minutes) and ``sacct`` (the accounting record, where the cluster keeps
one). A task cancelled while pending is in neither; so is a job whose record has not reached accounting yet.
Hence:

- a state that is not an end (PENDING, RUNNING, and any state this module does not know) keeps the cell
  waiting: UNKNOWN is never an end;
- an end (COMPLETED, CANCELLED, TIMEOUT, ...) before the cell's own record says done or failed makes the cell
  failed, with the state as the reason (a rerun resumes it);
- a job in neither source is failed only after ``MISSING_GRACE_S`` seconds of being missing (kept in the
  cell's record as ``missing_since``, so the grace spans reruns);
- a job id that now names a job of another name (a cluster whose state was wiped reuses ids) is not trusted:
  the cell is failed at once;
- where neither squeue nor sacct answers here, nothing can be told: the cell is held, never run twice.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from spikeguard.study.state import now, read_cell_record, write_cell_record

# Slurm's job states that end a job (squeue's and sacct's words); every other state is not an end.
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL",
         "DEADLINE", "REVOKED")
MISSING_GRACE_S = 120.0  # a job in neither squeue nor sacct this long is gone (accounting lags by seconds)
COMMAND_TIMEOUT_S = 60
HELD = ("queued", "running")  # a cell record's statuses under which its job may still be alive


@dataclass(frozen=True)
class Sighting:
    """One job as Slurm sees it: ``verdict`` is live, ended, missing, foreign (the id names another job) or
    unchecked (no Slurm command answered here); ``state`` is Slurm's word, ``where`` the source."""

    verdict: str
    state: str = ""
    where: str = ""


def held_job(record: dict) -> str | None:
    """The Slurm job a cell's record names while the cell may still be running under it."""
    job = record.get("job")
    return str(job) if job and record.get("status") in HELD else None


def look_up(jobs: dict[str, str]) -> dict[str, Sighting]:
    """What Slurm says about each job id (``ARRAY_TASK`` or ``JOB``) whose job must be named ``jobs[id]``."""
    if not jobs:
        return {}
    queue = _rows(["squeue", "--noheader", "--array", "--states=all", "--me", "--format=%i|%j|%T"])
    arrays = sorted({job.split("_")[0] for job in jobs})
    accounting = _rows(["sacct", "--noheader", "--parsable2", "--allocations", "--jobs=" + ",".join(arrays),
                        "--format=JobID,JobName,State"])
    if queue is None and accounting is None:
        return {job: Sighting("unchecked") for job in jobs}
    return {job: _sight(job, name, queue, accounting) for job, name in jobs.items()}


def _sight(job: str, name: str, queue: list[list[str]] | None, accounting: list[list[str]] | None) -> Sighting:
    # the task's own entry first; then an array's pending range, from squeue where it answers (sacct keeps a
    # pending range as it was at submission, tasks cancelled since included)
    searches = [("squeue", queue, True), ("sacct", accounting, True), ("squeue", queue, False)]
    if queue is None:
        searches.append(("sacct", accounting, False))
    for where, rows, exact in searches:
        for row in rows or []:
            if len(row) < 3 or not _names(row[0], job, exact):
                continue
            if row[1] != name:
                return Sighting("foreign", row[1], where)
            state = row[2].split()[0].rstrip("+").upper() if row[2].strip() else "UNKNOWN"
            return Sighting("ended" if state in ENDED else "live", state, where)
    return Sighting("missing")


def _names(entry: str, job: str, exact: bool) -> bool:
    """Whether squeue's or sacct's job id ``entry`` (JOB, JOB_K, or a pending range JOB_[0-3,7%2]) is ``job``."""
    if exact:
        return entry == job
    match = re.fullmatch(r"(\d+)_\[([^\]]*)\]", entry)
    if not match or "_" not in job:
        return False
    array, task = job.split("_", 1)
    if match.group(1) != array or not task.isdigit():
        return False
    for part in match.group(2).split("%")[0].split(","):
        low, _, high = part.partition("-")
        if low.isdigit() and int(low) <= int(task) <= int(high if high.isdigit() else low):
            return True
    return False


def _rows(command: list[str]) -> list[list[str]] | None:
    """The command's output lines split at |, or None where it is missing or fails (no accounting, no
    controller)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return [line.split("|") for line in done.stdout.splitlines() if line.strip()]


# ---- what it means for the cells --------------------------------------------------------------------------

def settle(study: Path, cells: list[str], job_name: str) -> dict[str, str]:
    """Look at the Slurm jobs of ``cells`` and write what follows into their records; returns each cell's
    standing: waiting (its job may still run), unchecked (nothing answered here), or ended (its record
    says done or failed, or no job holds it)."""
    records = {cell: read_cell_record(study, cell) for cell in cells}
    jobs = {job: job_name for job in filter(None, (held_job(r) for r in records.values()))}
    sightings = look_up(jobs)
    standing = {}
    for cell, record in records.items():
        job = held_job(record)
        standing[cell] = "ended" if job is None else _apply(study, cell, record, job, sightings[job])
    return standing


def _apply(study: Path, cell: str, record: dict, job: str, seen: Sighting) -> str:
    if seen.verdict not in ("live", "unchecked"):
        record = read_cell_record(study, cell)  # read after Slurm's answer: a job writes its record before it ends
        if held_job(record) != job:
            return "ended"
    kept = {k: v for k, v in record.items() if k not in ("id", "updated", "missing_since")}
    if seen.verdict == "unchecked":
        return "unchecked"
    if seen.verdict == "live":
        if "missing_since" in record:
            write_cell_record(study, cell, kept)
        return "waiting"
    if seen.verdict == "ended":
        reason = f"Slurm job {job} ended {seen.state} before the cell finished"
    elif seen.verdict == "foreign":
        reason = f"Slurm job id {job} now names job '{seen.state}' (the cluster's job ids restarted): not this cell's"
    else:
        since = record.get("missing_since") or now()
        missing = time.time() - datetime.fromisoformat(since).timestamp()
        if missing < MISSING_GRACE_S:
            if "missing_since" not in record:
                write_cell_record(study, cell, {**kept, "missing_since": since})
            return "waiting"
        reason = (f"Slurm job {job} is in neither squeue nor sacct for {missing:.0f} s (cancelled while pending, "
                  "or purged)")
    # the job is over; its log says why when it ran at all
    write_cell_record(study, cell, {**kept, "status": "failed", "reason": reason + "; a rerun resumes it"})
    return "ended"
