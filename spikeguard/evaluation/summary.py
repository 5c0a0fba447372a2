"""From per-sample rows to results.json and its per-sample CSV."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from spikeguard.errors import UserError
from spikeguard.attacks.ensemble import BROKEN
from spikeguard.attacks.registry import TRANSFER
from spikeguard.evaluation.suites import Suite
from spikeguard.files import write_text

CSV_FIRST = ["index", "label", "clean_correct", "robust", "broken_by"]


def attack_labels(suite: Suite, rows: list[dict]) -> list[str]:
    labels = [s.label for s in suite.attacks]
    if rows and TRANSFER in rows[0]:
        labels.append(TRANSFER)
    return labels


def finish_rows(rows: list[dict], labels: list[str]) -> list[dict]:
    """Add the ensemble outcome to each row: the minimum over attacks, and the first member (in suite
    order) that reached it."""
    rows = sorted(rows, key=lambda r: r["index"])
    for row in rows:
        robust, by = row["clean_correct"], "" if row["clean_correct"] >= BROKEN else "clean"
        for label in labels:
            if row[label] < robust:  # the attack that reached the worst case (the first, if several did)
                robust = row[label]
                member = row[f"{label}|broken_by"]
                by = f"{label}/{member}" if member and member != label else label
        row["robust"], row["broken_by"] = robust, by if robust < BROKEN else ""
    return rows


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def summarize(rows: list[dict], suite: Suite, labels: list[str], eps: float, seconds: dict[str, float],
              threat=None) -> dict:
    """``threat`` (a ThreatModel): event attacks' rows carry their event budget instead of an eps."""
    attacks = []
    specs = {s.label: s for s in suite.attacks}
    for label in labels:
        spec = specs.get(label)
        members = [k.split("|", 1)[1] for k in rows[0] if k.startswith(label + "|")
                   and k.split("|", 1)[1] not in ("broken_by", "mean")] if rows else []
        entry = {
            "name": label,
            "attack": spec.attack if spec else TRANSFER,
            "norm": spec.norm if spec else "linf",
            "eps": (spec.eps if spec and spec.eps is not None else eps),
            "params": dict(spec.params) if spec else dict(suite.transfer),
            "estimators": members if spec is None or spec.estimators else [],  # those that ran
            "accuracy": mean(r[label] for r in rows),
            "accuracy_per_estimator": {m: mean(r[f"{label}|{m}"] for r in rows) for m in members
                                       if spec is None or spec.estimators},
            "seconds": round(seconds.get(label, 0.0), 3),
        }
        if spec is not None and spec.norm == "events":
            entry["eps"] = None
            entry["budget"] = spec.params["budget"] if spec.params["budget"] is not None else threat.budget
            entry["frame_range"] = threat.frame_range
        if entry["estimators"]:
            entry["params"]["per_estimator"] = ("cumulative: worst case over this and the earlier estimators"
                                                if suite.cascade else "each estimator on every sample")
        if entry["params"].get("survivors_only"):
            entry["params"]["accuracy_is"] = "robust to this attack and every earlier one (survivors only)"
        if rows and f"{label}|mean" in rows[0]:
            entry["params"]["mean_accuracy"] = mean(r[f"{label}|mean"] for r in rows)
            entry["params"]["accuracy_is"] = "worst case over draws"
        if "estimators" in entry["params"]:
            entry["params"]["estimators"] = list(entry["params"]["estimators"])
        attacks.append(entry)
    return {
        "clean_accuracy": mean(r["clean_correct"] for r in rows),
        "attacks": attacks,
        "ensemble_accuracy": mean(r["robust"] for r in rows),
    }


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = CSV_FIRST + [k for k in (rows[0] if rows else {}) if k not in CSV_FIRST]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(path, buffer.getvalue())


def read_csv(path: Path) -> list[dict]:
    """The rows write_csv wrote; UserError in one line for a missing or malformed file."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        out = []
        for row in rows:
            parsed = {}
            for key, value in row.items():
                if key in ("index", "label"):
                    parsed[key] = int(value)
                elif key == "broken_by" or key.endswith("|broken_by") or key == "zero_gradient":
                    parsed[key] = value or ""
                else:
                    parsed[key] = float(value)
            out.append(parsed)
    except (OSError, ValueError, TypeError) as e:
        raise UserError(f"per-sample file '{path}' cannot be read ({type(e).__name__}: {str(e)[:100]})") from None
    if not out or "index" not in out[0]:
        raise UserError(f"per-sample file '{path}' holds no rows")
    return out
