"""The study summary's estimator section: which backward estimator breaks each group's models, and what the
training estimator alone would have reported (docs/findings.md, question 3).

Per cell, from the headline evaluation: each estimator's accuracy is its worst over the gradient attacks run
alone under the whole bank (FGSM, PGD, APGD-CE; attacks that ran under a few estimators only are left out, so
every estimator faces the same attacks). A group shows the mean over seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spikeguard.figures import EstimatorLine, estimator_bank
from spikeguard.report.blocks import Block, Figure, Paragraph, Table
from spikeguard.report.tables import ABSENT
from spikeguard.study.groups import Group, cell_text

TRAINING_DEFAULT = "triangle:1"  # TrainConfig.train_estimator's default


def estimator_accuracies(numbers: dict[str, Any]) -> dict[str, float]:
    """{estimator: worst accuracy over the headline evaluation's bank-wide gradient attacks}."""
    evaluations = numbers.get("evaluations") or []
    per_attack = (evaluations[0].get("per_estimator") or {}) if evaluations else {}
    if not per_attack:
        return {}
    bank = max(len(accuracies) for accuracies in per_attack.values())
    out: dict[str, float] = {}
    for accuracies in per_attack.values():
        if len(accuracies) < bank:
            continue
        for name, accuracy in accuracies.items():
            out[name] = min(out.get(name, 1.0), accuracy)
    return out


def estimator_blocks(groups: list[Group], training_estimator: str = TRAINING_DEFAULT,
                     figure_path: Path | None = None) -> list[Block]:
    rows, lines = [], []
    for g in groups:
        per_cell = [estimator_accuracies(c["numbers"]) for c in g.cells]
        per_cell = [p for p in per_cell if p]
        if not per_cell:
            continue
        own = str(g.settings.get("train_estimator", training_estimator))
        worst = g.values("worst_case")
        mean = {name: sum(p.get(name, 1.0) for p in per_cell) / len(per_cell) for name in per_cell[0]}
        names = sorted(mean, key=lambda name: (mean[name], name))
        rows.append([g.label, own, cell_text([p[own] for p in per_cell if own in p], True),
                     cell_text([min(p.values()) for p in per_cell], True),
                     ", ".join(f"{name} {100 * mean[name]:.1f}" for name in names[:3]),
                     cell_text(worst, True)])
        lines.append(EstimatorLine(g.label, {name: 100 * value for name, value in mean.items()}, own,
                                   100 * sum(worst) / len(worst) if worst else None))
    if not rows:
        return [Paragraph(f"{ABSENT}: the headline evaluation ran no gradient attack under several estimators.")]
    figure = [] if figure_path is None else [Figure(
        estimator_bank(lines, figure_path), "Accuracy under each backward estimator of the bank, mean over seeds "
        "(strongest on the left); ringed: the group's training estimator; dashed: its worst case over every attack")]
    return [Table(["cells", "training estimator", "its own gradient only %", "strongest estimator %",
                   "three strongest estimators (mean %)", "worst case, all attacks %"], rows), *figure,
            Paragraph("Per seed, each estimator's accuracy is its worst over the gradient attacks the headline "
                      "evaluation ran under the whole bank; 'its own gradient only' is what an evaluation under the "
                      "training estimator alone reports, 'strongest estimator' the lowest over the bank, 'worst case' "
                      "the per-sample worst over every attack and estimator (the headline). Estimators tied on the mean are "
                      "listed by name.")]
