"""``spikeguard evaluate --verify results.json``: re-run a random subset of the stored batches and
confirm their per-sample outcomes. Batches are independent (runner.py seeds each from the evaluation
seed and its number), so a re-run must reproduce them exactly on the same device type."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

from spikeguard.errors import UserError
from spikeguard.evaluation.escalation import LABELS as ESCALATION_LABELS
from spikeguard.evaluation.runner import Plan, run_suite
from spikeguard.evaluation.suites import suite_from_dict
from spikeguard.evaluation.summary import attack_labels, finish_rows
from spikeguard.evaluation.targets import load_source, load_target
from spikeguard.evaluation.threat_models import threat_from_record
from spikeguard.schema import EvalRecord, FlagName, SampleOutcome, read_results, read_samples


def read_verifiable(path: Path) -> EvalRecord:
    """The results at ``path``, which must hold what a re-run needs (files before the suites do not)."""
    record = read_results(path)
    needed = {"checkpoint": record.checkpoint or record.model_fn, "suite_spec": record.suite_spec,
              "eps": record.eps, "batch_size": record.batch_size, "seed": record.seed, "eot_draws": record.eot_draws,
              "per_sample": record.per_sample, "dataset": record.dataset, "n": record.n or None}
    missing = [k for k, v in needed.items() if v is None]
    if missing:
        raise UserError(f"'{path}' is not a spikeguard results file that can be verified (missing "
                        f"{', '.join(missing)})")
    return record


def verify(path: Path, fraction: float = 0.1, data_dir: str | None = None, device="cpu",
           progress: bool = True) -> tuple[int, int, int, list[str]]:
    """(samples checked, batches re-run, batches in all, mismatch descriptions). ``fraction`` 1: every batch."""
    record = read_verifiable(path)
    assert record.eps is not None and record.batch_size is not None and record.seed is not None  # read_verifiable
    stored_rows = read_samples(Path(path).parent / str(record.per_sample))
    stored = {r.index: r for r in stored_rows}
    mismatches = _summary_mismatches(record, stored_rows)
    external = record.model_fn
    target = load_target(None if external else Path(str(record.checkpoint)), external, record.dataset, None,
                         data_dir, False)
    if record.checkpoint_sha256 and target.checkpoint_sha256 != record.checkpoint_sha256:
        raise UserError(f"checkpoint '{target.checkpoint}' changed since the evaluation (sha256 differs)")
    suite = suite_from_dict(record.suite_spec, source=record.suite or "stored")
    source = load_source(record.source, target) if record.source else None
    total = math.ceil(record.n / record.batch_size)
    count = max(1, round(total * fraction))
    chosen = sorted(random.Random().sample(range(total), count))  # a fresh choice each time, on purpose
    threat = threat_from_record(record.threat_model, record.eps)
    if threat.frame_range is not None and threat.frame_range != target.frame_range:
        raise UserError(f"the data set's frame range is now {target.frame_range}, the evaluation used "
                        f"{threat.frame_range}: the frames differ, so the outcomes cannot be compared")
    plan = Plan(target.model, target.test, suite, record.eps, target.num_classes, n=record.n,
                batch_size=record.batch_size, seed=record.seed, device=device, draws=record.eot_draws,
                source=source, threat=threat, progress=progress,
                batch_dependent=FlagName.BATCH_DEPENDENT in record.flag_names)  # intended when evaluated
    rows, _ = run_suite(plan, batches=chosen)
    labels = attack_labels(suite, rows)
    if record.escalation:  # not re-run (its substitute is trained on the whole run): taken as stored
        labels += list(ESCALATION_LABELS)
        for row in rows:
            _escalation_as_stored(row, stored.get(row.index))
    mismatches += _row_mismatches(finish_rows(rows, labels), stored)
    if mismatches and record.device and str(device) != record.device:
        mismatches[0] += f" (stored on {record.device}, re-run on {device}: kernels may differ)"
    return len(rows), count, total, mismatches


def _escalation_as_stored(row: SampleOutcome, old: SampleOutcome | None) -> None:
    for label in ESCALATION_LABELS:
        outcome, before = row.attack(label), (old.attacks.get(label) if old else None)
        outcome.score = before.score if before else (row.robust if row.robust is not None else 0.0)
        outcome.broken_by = before.broken_by if before else ""


def _row_mismatches(rows: list[SampleOutcome], stored: dict[int, SampleOutcome]) -> list[str]:
    """Every column of every re-run row against the stored one: scores per attack and member, broken_by, ..."""
    out = []
    for sample in rows:
        if sample.index not in stored:
            out.append(f"sample {sample.index} is missing from the stored CSV")
            continue
        old = stored[sample.index].to_row()
        for key, value in sample.to_row().items():
            before = old.get(key)
            same = (abs(float(before) - value) <= 1e-5 if isinstance(value, float) and isinstance(before, float)
                    else before == value)
            if not same:
                out.append(f"sample {sample.index}: stored {key} = {before}, re-run gives {value}")
    return out


def _summary_mismatches(record: EvalRecord, rows: list[SampleOutcome]) -> list[str]:
    """The stored numbers must follow from the stored per-sample rows."""
    n = record.n
    if len(rows) != n or sorted(r.index for r in rows) != list(range(n)):
        return [f"the CSV holds {len(rows)} rows, not samples 0..{n - 1}"]
    pairs: list[tuple[str, float | None, str, Callable[[SampleOutcome], float]]] = [
        ("clean_accuracy", record.clean_accuracy, "clean_correct", lambda r: r.clean_correct),
        ("ensemble_accuracy", record.ensemble_accuracy, "robust", lambda r: r.worst_case)]
    for attack in record.attacks:
        name = attack.name
        pairs.append((f"attack {name}", attack.accuracy, name, _attack_score(name)))
        for member, value in attack.accuracy_per_estimator.items():
            pairs.append((f"attack {name} under {member}", value, f"{name}|{member}", _member_score(name, member)))
    out = []
    for what, stored, column, read in pairs:
        try:
            total = sum(read(r) for r in rows)
        except (KeyError, TypeError, ValueError):
            total = None
        if total is None or not isinstance(stored, (int, float)):
            out.append(f"{what}: no stored value or no '{column}' column")
        elif abs(total / n - stored) > 1e-6:
            out.append(f"{what}: results.json says {stored:.6g}, its CSV gives {total / n:.6g}")
    return out


def _attack_score(label: str) -> Callable[[SampleOutcome], float]:
    return lambda sample: sample.score(label)


def _member_score(label: str, member: str) -> Callable[[SampleOutcome], float]:
    return lambda sample: sample.attacks[label].members[member]
