"""The facts of a study directory, in one place (no PyTorch here).

``spikeguard study PLAN --out DIR`` makes:

- DIR/plan.yaml: the plan, as checked; a rerun (``spikeguard study DIR``) reads it back;
- DIR/cells/ID/: each cell's ordinary run directory (config.yaml, metrics.jsonl, best.pt, last.pt), with its
  evaluations results-K-SUITE.json (+ .csv) and its analysis in analysis/;
- DIR/cells/ID.json: the cell's record (status, reason, the numbers read from its files, timing, threads),
  written only by the process that runs the cell while it holds DIR/cells/.ID.json.lock;
- DIR/cells/ID.log: the cell's own output when it runs in another process;
- DIR/study.json: every cell with its status and numbers, rebuilt from the cell records;
- DIR/study.log: the study's progress lines, across reruns;
- DIR/summary.md, DIR/summary.html, DIR/figures/: the aggregated report (spikeguard report DIR).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from spikeguard.errors import UserError
from spikeguard.files import append_line, write_bytes, write_json
from spikeguard.locks import lock_holder
from spikeguard.study.plan import StudyPlan, load_plan

FORMAT = "spikeguard-study/1"
PLAN = "plan.yaml"
STUDY = "study.json"
WRITING = ".study.json.writing"  # the lock file of study.json's writers
LOG = "study.log"
CELLS = "cells"
STATUSES = ("pending", "queued", "running", "done", "failed")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def cell_dir(study: Path, cell_id: str) -> Path:
    return Path(study) / CELLS / cell_id


def cell_record_path(study: Path, cell_id: str) -> Path:
    return Path(study) / CELLS / f"{cell_id}.json"


def cell_log_path(study: Path, cell_id: str) -> Path:
    return Path(study) / CELLS / f"{cell_id}.log"


def evaluation_path(run_dir: Path, number: int, suite: str) -> Path:
    """results-K-SUITE.json: the K-th evaluation of the plan (1 is the headline)."""
    stem = Path(suite).stem if suite.endswith((".yaml", ".yml")) else suite
    return Path(run_dir) / f"results-{number}-{stem}.json"


def is_study(path: Path) -> bool:
    return (Path(path) / PLAN).is_file() and (Path(path) / STUDY).is_file()


def open_study(plan: StudyPlan, out: Path) -> Path:
    """Make DIR for ``plan``, or reopen it when it holds the same plan (a rerun); another plan is refused."""
    out = Path(out)
    if "\0" in str(out):
        raise UserError("output path contains a NUL character")
    if out.exists() and not out.is_dir():
        raise UserError(f"'{out}' exists and is not a directory")
    if (out / PLAN).is_file():
        stored = read_plan(out)
        if stored.fingerprint() != plan.fingerprint():
            raise UserError(f"'{out}' holds study '{stored.name}' with another plan; choose a new --out, or run "
                            f"`spikeguard study {out}` to continue that one")
        if plan.slurm != stored.slurm:
            write_plan(out, plan)  # where cells run may change between reruns
        return out
    if out.exists() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise UserError(f"'{out}' already exists and holds no study; choose a new --out")
    try:
        (out / CELLS).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create '{out}' ({e.strerror or e})") from None
    write_plan(out, plan)
    return out


def write_plan(out: Path, plan: StudyPlan) -> None:
    write_bytes(out / PLAN, yaml.safe_dump(plan.to_dict(), sort_keys=False).encode())


def read_plan(study: Path) -> StudyPlan:
    path = Path(study) / PLAN
    if not path.is_file():
        raise UserError(f"'{study}' is not a study directory (it has no {PLAN})")
    return load_plan(path)


# ---- cell records ---------------------------------------------------------------------------------------

def read_cell_record(study: Path, cell_id: str) -> dict[str, Any]:
    """The cell's record; a cell never started is pending. A record that cannot be read counts as pending too
    (it is rewritten when the cell runs): it only says what happened, the files say what is done."""
    path = cell_record_path(study, cell_id)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"id": cell_id, "status": "pending"}
    return record if isinstance(record, dict) and record.get("status") in STATUSES else {"id": cell_id,
                                                                                         "status": "pending"}


def write_cell_record(study: Path, cell_id: str, record: dict[str, Any]) -> None:
    write_json(cell_record_path(study, cell_id), {"id": cell_id, **record, "updated": now()})


def shown_status(study: Path, record: dict[str, Any]) -> str:
    """The status to show: a running cell whose process is gone was killed (the next run resumes it)."""
    status = record.get("status", "pending")
    if status != "running":
        return status
    try:
        held = lock_holder(cell_record_path(study, record["id"]))
    except UserError:
        return "running"
    if held is None or held[1] == "gone":
        return "killed"
    return "running"


# ---- study.json -------------------------------------------------------------------------------------------

def collect(study: Path, plan: StudyPlan, read_numbers: Callable[[Path, StudyPlan, str], Any] | None = None
            ) -> dict[str, Any]:
    """study.json's content: the plan's cells with their records, in grid order. ``read_numbers``
    (study/cell.py's cell_numbers, given by the summary): a finished cell's numbers read again from its files,
    so that what a newer spikeguard reads from them shows without rerunning the cell; the record's where the
    files cannot be read."""
    cells = []
    for cell in plan.cells:
        record = read_cell_record(study, cell.id)
        kept: dict[str, Any] = {k: record[k] for k in ("reason", "numbers", "timing", "threads", "machine", "started",
                                                       "finished", "job", "reused_from") if k in record}
        if record.get("status") == "done" and read_numbers is not None:
            try:
                kept["numbers"] = read_numbers(study, plan, cell.id)
            except (UserError, OSError, ValueError, KeyError, TypeError):
                pass  # the record's numbers stand
        cells.append({"id": cell.id, "settings": cell.settings, "dir": f"{CELLS}/{cell.id}",
                      "status": shown_status(study, record), **kept})
    counts = {s: sum(c["status"] == s for c in cells) for s in (*STATUSES, "killed")}
    return {"format": FORMAT, "name": plan.name, "plan": plan.to_dict(), "fingerprint": plan.fingerprint(),
            "threads": plan.threads, "updated": now(), "counts": {k: v for k, v in counts.items() if v},
            "cells": cells}


def write_study(study: Path, plan: StudyPlan,
                read_numbers: Callable[[Path, StudyPlan, str], Any] | None = None) -> dict[str, Any]:
    """Rebuild study.json. Slurm jobs that end together each rebuild it: one at a time, so that the last
    writer has read every record written before it."""
    with _writing(Path(study)):
        data = collect(study, plan, read_numbers)
        write_json(Path(study) / STUDY, data)
    return data


@contextmanager
def _writing(study: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: one writer at a time is then the user's affair
        yield
        return
    with open(study / WRITING, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_study(study: Path) -> dict[str, Any]:
    path = Path(study) / STUDY
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"'{study}' is not a study directory (it has no {STUDY})") from None
    except (OSError, ValueError) as e:
        raise UserError(f"'{path}' cannot be read ({type(e).__name__}); `spikeguard study {study}` rewrites it") \
            from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"'{path}' is not a spikeguard study file")
    return data


def log_line(study: Path, text: str) -> None:
    """One progress line in DIR/study.log (the terminal gets it from the Reporter)."""
    try:
        append_line(Path(study) / LOG, f"{now()} {socket.gethostname()} {text}")
    except OSError:
        pass  # the log is a convenience; a full disk shows up where results are written

