"""The facts of a run directory, in one place.

A run directory, as `spikeguard train --out` makes it, holds:

- config.yaml: the training configuration (TrainConfig fields), rewritten on resume;
- metrics.jsonl: one JSON line per finished epoch, appended durably; a resume or rollback drops the lines of
  epochs it replays;
- best.pt: the best-on-validation checkpoint; last.pt, last.1.pt, ...: the rotating training checkpoints
  (spikeguard.checkpoint);
- while a write is under way, its temporary file .NAME.XXXXXXXX.tmp (spikeguard.files);
- while a process writes it, its lock .spikeguard.lock (spikeguard.locks).

This module imports neither torch nor the training loop; loading a checkpoint's data set does so lazily.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from spikeguard.config import read_yaml
from spikeguard.errors import UserError
from spikeguard.files import append_line, write_bytes
from spikeguard.locks import is_lock_file

if TYPE_CHECKING:
    from spikeguard.config import TrainConfig
    from spikeguard.data import DataSplits

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
BEST = "best.pt"
LAST = "last.pt"
RUN_FILES = ("last", "best", "metrics", "config")  # the stems of the files a run writes


# ---- creating and reopening one ---------------------------------------------------------------------

def prepare_run_dir(out: str | Path) -> Path:
    """Refuse to reuse a run directory (a finished run is never overwritten) or one that cannot be created."""
    if "\0" in str(out):
        raise UserError("output path contains a NUL character")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(not is_lock_file(p.name) for p in out.iterdir())):
        raise UserError(f"output '{out}' already exists and is not an empty directory; choose a new --out")
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot create '{out}': '{parent}' is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot create '{out}': '{parent}' is not writable")
    return out


def start_run_dir(run_dir: Path, cfg: TrainConfig) -> None:
    """Create the run directory with its config.yaml and an empty metrics.jsonl."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, cfg)
    write_bytes(run_dir / METRICS, b"")


def existing_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path after checking it is a run directory this process can continue writing."""
    if "\0" in str(run_dir):
        raise UserError("run directory path contains a NUL character")
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise UserError(f"'{run_dir}' is not a run directory (it has no {CONFIG})")
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise UserError(f"run directory '{run_dir}' is not writable")
    return run_dir


def remove_stale_temporaries(run_dir: Path) -> None:
    """Remove the half-written files a killed process left (see spikeguard.files). missing_ok: under torchrun
    another rank may have removed the file first."""
    for stale in run_dir.glob(".*.tmp"):
        if stale.name.split(".")[1] in RUN_FILES:
            stale.unlink(missing_ok=True)


# ---- config.yaml ------------------------------------------------------------------------------------

def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    """config.yaml: the fields that apply to the run (TrainConfig.to_record); omitted ones load as defaults."""
    write_bytes(run_dir / CONFIG, yaml.safe_dump(cfg.to_record(), sort_keys=False).encode())


def read_config(run: Path) -> dict:
    """config.yaml as a dict, {} if there is none; invalid YAML is a UserError."""
    path = run / CONFIG
    if not path.is_file():
        return {}
    data = read_yaml(path, "run config")
    return data if isinstance(data, dict) else {}


# ---- metrics.jsonl ----------------------------------------------------------------------------------

def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one epoch's line durably. A line cut short by a crash is dropped on resume."""
    try:
        append_line(run_dir / METRICS, json.dumps(record))
    except OSError as e:
        raise UserError(f"could not write '{run_dir / METRICS}' ({e.strerror}); after freeing space: "
                        f"spikeguard train --resume {run_dir}") from None


def keep_metrics_up_to(run_dir: Path, epoch: int) -> None:
    """Drop the metrics.jsonl lines of epochs after ``epoch`` (and a line a crash cut short), so a replayed
    epoch is logged once."""
    path = run_dir / METRICS
    kept = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("epoch"), int) and record["epoch"] <= epoch:
            kept.append(line + "\n")
    write_bytes(path, "".join(kept).encode())


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl records, or [] if there is no such file; a malformed line is a UserError."""
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise UserError(f"'{path}' line {number} is not JSON") from None
    return records


# ---- checkpoints and what they came from -------------------------------------------------------------

def run_directory(checkpoint: str | Path) -> Path:
    """The run directory of a checkpoint file, or the directory itself."""
    path = Path(checkpoint)
    return path if path.is_dir() else path.parent


def label_for(cfg: dict, run: Path) -> str:
    """A short name for a model in tables and legends: its defense (and lambda, a training estimator other
    than the default, ANN for network ann), else its run directory."""
    defense = cfg.get("defense")
    if not defense:
        return run.name or str(run)
    from spikeguard.config import TrainConfig

    default = TrainConfig.train_estimator
    lamb = cfg.get("lamb") or 0
    details = [f"lambda {lamb:g}"] if lamb else []
    if cfg.get("network", "snn") == "ann":
        details.append("ANN")
    elif cfg.get("train_estimator", default) != default:
        details.append(f"trained with {cfg['train_estimator']}")
    return f"{defense} ({', '.join(details)})" if details else str(defense)


def load_splits(ckpt: dict[str, Any], data_dir: str | Path | None = None, download: bool = False) -> DataSplits:
    """The data set a checkpoint was trained on, split as in its run (validation fraction and seed from its
    stored config, event options included), without augmentation. ``data_dir`` None: the run's."""
    from spikeguard.config import dvs_options
    from spikeguard.data import load_dataset

    cfg = ckpt.get("config", {})
    dataset = ckpt["dataset"]
    return load_dataset(dataset, str(data_dir) if data_dir is not None else cfg.get("data_dir"), download,
                        cfg.get("val_fraction", 0.1), cfg.get("seed", 0), augment=False,
                        dvs=dvs_options({**cfg, "dataset": dataset}))
