"""``spikeguard evaluate --verify results.json``: re-run a random subset of the stored batches and
confirm their per-sample outcomes. Batches are independent (runner.py seeds each from the evaluation
seed and its number), so a re-run must reproduce them exactly on the same device type."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from spikeguard.errors import UserError
from spikeguard.evaluation.escalation import LABELS as ESCALATION_LABELS
from spikeguard.evaluation.runner import Plan, run_suite
from spikeguard.evaluation.suites import suite_from_dict
from spikeguard.evaluation.summary import attack_labels, finish_rows, read_csv
from spikeguard.evaluation.targets import load_source, load_target
from spikeguard.evaluation.threat_models import threat_from_record


def read_results(path: Path) -> dict:
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"results file '{path}' cannot be read as JSON ({type(e).__name__})") from None
    if not isinstance(results, dict):
        raise UserError(f"'{path}' is not a spikeguard results file (not a JSON object)")
    needed = ("checkpoint", "suite_spec", "eps", "n", "batch_size", "seed", "eot_draws", "per_sample", "dataset")
    missing = [k for k in needed if k not in results]
    if missing:
        raise UserError(f"'{path}' is not a spikeguard results file (missing {', '.join(missing)})")
    return results


def verify(path: Path, fraction: float = 0.1, data_dir: str | None = None, device="cpu",
           progress: bool = True) -> tuple[int, int, int, list[str]]:
    """(samples checked, batches re-run, batches in all, mismatch descriptions). ``fraction`` 1: every batch."""
    results = read_results(path)
    stored_rows = read_csv(Path(path).parent / str(results["per_sample"]))
    stored = {r["index"]: r for r in stored_rows}
    mismatches = _summary_mismatches(results, stored_rows)
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
    threat = threat_from_record(results.get("threat_model"), results["eps"])
    if threat.frame_range is not None and threat.frame_range != target.frame_range:
        raise UserError(f"the data set's frame range is now {target.frame_range}, the evaluation used "
                        f"{threat.frame_range}: the frames differ, so the outcomes cannot be compared")
    plan = Plan(target.model, target.test, suite, results["eps"], target.num_classes, n=results["n"],
                batch_size=results["batch_size"], seed=results["seed"], device=device, draws=results["eot_draws"],
                source=source, threat=threat, progress=progress)
    rows, _ = run_suite(plan, batches=chosen)
    labels = attack_labels(suite, rows)
    if results.get("escalation"):  # not re-run (its substitute is trained on the whole run): taken as stored
        labels += list(ESCALATION_LABELS)
        for row in rows:
            old = stored.get(row["index"], {})
            for label in ESCALATION_LABELS:
                for key in (label, f"{label}|broken_by"):
                    row[key] = old.get(key, row.get("robust", 0.0) if key == label else "")
    for row in finish_rows(rows, labels):
        old = stored.get(row["index"])
        if old is None:
            mismatches.append(f"sample {row['index']} is missing from the stored CSV")
            continue
        for key, value in row.items():  # every column: scores per attack and estimator, broken_by, ...
            before = old.get(key)
            same = (abs(float(before) - value) <= 1e-5 if isinstance(value, float) and isinstance(before, float)
                    else before == value)
            if not same:
                mismatches.append(f"sample {row['index']}: stored {key} = {before}, re-run gives {value}")
    if mismatches and results.get("device") and str(device) != results["device"]:
        mismatches[0] += f" (stored on {results['device']}, re-run on {device}: kernels may differ)"
    return len(rows), count, total, mismatches


def _summary_mismatches(results: dict, rows: list[dict]) -> list[str]:
    """The stored numbers must follow from the stored per-sample rows."""
    n = results["n"]
    if len(rows) != n or sorted(r["index"] for r in rows) != list(range(n)):
        return [f"the CSV holds {len(rows)} rows, not samples 0..{n - 1}"]
    pairs = [("clean_accuracy", results.get("clean_accuracy"), "clean_correct"),
             ("ensemble_accuracy", results.get("ensemble_accuracy"), "robust")]
    for attack in (a for a in results.get("attacks", []) if isinstance(a, dict)):
        name = attack.get("name")
        pairs.append((f"attack {name}", attack.get("accuracy"), name))
        for member, value in (attack.get("accuracy_per_estimator") or {}).items():
            pairs.append((f"attack {name} under {member}", value, f"{name}|{member}"))
    out = []
    for what, stored, column in pairs:
        if column not in rows[0] or not isinstance(stored, (int, float)):
            out.append(f"{what}: no stored value or no '{column}' column")
        elif abs(sum(r[column] for r in rows) / n - stored) > 1e-6:
            out.append(f"{what}: results.json says {stored:.6g}, its CSV gives {sum(r[column] for r in rows) / n:.6g}")
    return out
