"""``spikeguard evaluate --verify results.json``: re-run a random subset of the stored batches and
confirm their per-sample outcomes. Batches are independent (runner.py seeds each from the evaluation
seed and its number), so a re-run must reproduce them exactly on the same device type."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from spikeguard.errors import UserError
from spikeguard.evaluation.runner import run_suite
from spikeguard.evaluation.suites import suite_from_dict
from spikeguard.evaluation.summary import attack_labels, finish_rows, read_csv
from spikeguard.evaluation.targets import load_source, load_target


def read_results(path: Path) -> dict:
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"results file '{path}' cannot be read as JSON ({type(e).__name__})") from None
    needed = ("checkpoint", "suite_spec", "eps", "n", "batch_size", "seed", "eot_draws", "per_sample", "dataset")
    missing = [k for k in needed if k not in results]
    if missing:
        raise UserError(f"'{path}' is not a spikeguard results file (missing {', '.join(missing)})")
    return results


def verify(path: Path, fraction: float = 0.1, data_dir: str | None = None, device="cpu",
           progress: bool = True) -> tuple[int, int, list[str]]:
    """(samples checked, batches re-run, mismatch descriptions)."""
    results = read_results(path)
    stored = {r["index"]: r for r in read_csv(Path(path).parent / results["per_sample"])}
    external = results.get("model_fn")
    target = load_target(None if external else Path(results["checkpoint"]), external, results["dataset"], None,
                         data_dir, False)
    if results.get("checkpoint_sha256") and target.checkpoint_sha256 != results["checkpoint_sha256"]:
        raise UserError(f"checkpoint '{target.checkpoint}' changed since the evaluation (sha256 differs)")
    suite = suite_from_dict(results["suite_spec"], source=results.get("suite", "stored"))
    source = load_source(results["source"], target) if results.get("source") else None
    total = math.ceil(results["n"] / results["batch_size"])
    count = max(1, round(total * fraction))
    chosen = sorted(random.Random().sample(range(total), count))  # a fresh choice each time, on purpose
    rows, _ = run_suite(target.model, target.test, suite, results["eps"], num_classes=target.num_classes,
                        n=results["n"], batch_size=results["batch_size"], seed=results["seed"], device=device,
                        draws=results["eot_draws"], source=source, batches=chosen, progress=progress)
    labels = attack_labels(suite, rows)
    mismatches = []
    for row in finish_rows(rows, labels):
        old = stored.get(row["index"])
        if old is None:
            mismatches.append(f"sample {row['index']} is missing from the stored CSV")
            continue
        for key in ("clean_correct", "robust", *labels):
            if abs(float(old[key]) - row[key]) > 1e-6:
                mismatches.append(f"sample {row['index']}: stored {key} = {old[key]:g}, re-run gives {row[key]:g}")
    return len(rows), count, mismatches
