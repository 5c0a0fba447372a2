"""From per-sample outcomes to the numbers of results.json: each sample's worst case over the attacks, and
each attack's accuracy (spikeguard/schema.py writes both files)."""

from __future__ import annotations

import math

from spikeguard.attacks.ensemble import BROKEN
from spikeguard.attacks.registry import TRANSFER
from spikeguard.evaluation.suites import Suite
from spikeguard.schema import AttackResult, SampleOutcome


def attack_labels(suite: Suite, rows: list[SampleOutcome]) -> list[str]:
    labels = [s.label for s in suite.attacks]
    if rows and TRANSFER in rows[0].attacks:
        labels.append(TRANSFER)
    return labels


def finish_rows(rows: list[SampleOutcome], labels: list[str]) -> list[SampleOutcome]:
    """Add the ensemble outcome to each row: the minimum over attacks, and the first member (in suite
    order) that reached it."""
    rows = sorted(rows, key=lambda r: r.index)
    for row in rows:
        robust, by = row.clean_correct, "" if row.clean_correct >= BROKEN else "clean"
        for label in labels:
            if row.score(label) < robust:  # the attack that reached the worst case (the first, if several did)
                robust, member = row.score(label), row.attacks[label].broken_by
                by = f"{label}/{member}" if member and member != label else label
        row.robust, row.broken_by = robust, by if robust < BROKEN else ""
    return rows


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def robust_accuracy(rows: list[SampleOutcome]) -> float:
    return mean(r.worst_case for r in rows)


def summarize(rows: list[SampleOutcome], suite: Suite, labels: list[str], eps: float, seconds: dict[str, float],
              threat=None) -> list[AttackResult]:
    """One entry per attack. ``threat`` (a ThreatModel): event attacks carry their event budget, not an eps."""
    specs = {s.label: s for s in suite.attacks}
    return [_attack_result(rows, label, specs.get(label), suite, eps, seconds, threat) for label in labels]


def _attack_result(rows: list[SampleOutcome], label: str, spec, suite: Suite, eps: float, seconds: dict[str, float],
                   threat) -> AttackResult:
    members = list(rows[0].attacks[label].members) if rows else []
    counted = spec is None or bool(spec.estimators)  # a black-box attack's one member is no estimator
    entry = AttackResult(
        name=label, attack=spec.attack if spec else TRANSFER, norm=spec.norm if spec else "linf",
        eps=spec.eps if spec and spec.eps is not None else eps,
        params=dict(spec.params) if spec else dict(suite.transfer),
        estimators=members if counted else [],  # those that ran
        accuracy=mean(r.score(label) for r in rows),
        accuracy_per_estimator={m: mean(r.attacks[label].members[m] for r in rows) for m in members} if counted
        else {},
        seconds=round(seconds.get(label, 0.0), 3))
    params = entry.params
    if spec is not None and spec.norm == "events":
        entry.eps = None
        entry.budget = spec.params["budget"] if spec.params["budget"] is not None else threat.budget
        entry.frame_range = threat.frame_range
    if entry.estimators:
        params["per_estimator"] = ("cumulative: worst case over this and the earlier estimators" if suite.cascade
                                   else "each estimator on every sample")
    if params.get("survivors_only"):
        params["accuracy_is"] = "robust to this attack and every earlier one (survivors only)"
    if rows and rows[0].attacks[label].mean is not None:
        params["mean_accuracy"] = mean(r.attacks[label].mean for r in rows)
        params["accuracy_is"] = "worst case over draws"
    if "estimators" in params:
        params["estimators"] = list(params["estimators"])
    return entry
