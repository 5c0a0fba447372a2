"""Cells copied from other studies (plan key ``reuse``): a cell of this plan whose training configuration,
evaluations, analysis and thread count are those of a finished cell of a study beside this one computes the
same numbers on the same machine (training and attacks are seeded; another processor or torch build can differ
within seed noise), so its files are copied instead of recomputed. Its record says where from and keeps the
machine it ran on, which the summary lists. Questions that share their main comparison (docs/findings.md) run
it once. An ensemble cell is copied where the other study's ensemble has members of the same recipes (its
numbers are theirs, averaged); a distilled student never is (it is taught by this study's own cells)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from spikeguard.study.plan import StudyPlan
from spikeguard.study.state import cell_dir, read_cell_record, read_plan, write_cell_record


def _same(a: object, b: object) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _recipe(plan: StudyPlan, cell_id: str) -> dict:
    cell = plan.cell(cell_id)
    if cell.members:
        return {"ensemble of": [_recipe(plan, member) for member in cell.members]}
    return {k: v for k, v in cell.config.to_record().items() if k != "device"}


def reuse_cells(study: Path, plan: StudyPlan, cells: list[str]) -> dict[str, str]:
    """Copy what can be copied into ``study``; returns {cell: "other-study/cell"} for each copied cell."""
    from spikeguard.study.executors import finished

    copied: dict[str, str] = {}
    for name in plan.reuse:
        other_dir = Path(study).parent / name
        if not (other_dir / "plan.yaml").is_file() or other_dir.resolve() == Path(study).resolve():
            continue
        other = read_plan(other_dir)
        if not (_same(other.evaluate, plan.evaluate) and _same(other.analyze, plan.analyze)
                and other.threads == plan.threads):
            continue
        theirs = {json.dumps(_recipe(other, c.id), sort_keys=True): c.id for c in other.cells
                  if not c.teachers and finished(other_dir, other, c.id)}
        for cell_id in cells:
            if cell_id in copied or plan.cell(cell_id).teachers:  # taught by this study's own cells
                continue
            source = theirs.get(json.dumps(_recipe(plan, cell_id), sort_keys=True))
            if source is None:
                continue
            target = cell_dir(study, cell_id)
            if target.exists():
                continue  # something of this cell is here already: it resumes from that
            shutil.copytree(cell_dir(other_dir, source), target,
                            ignore=shutil.ignore_patterns(".*.lock", ".*.tmp", ".*.batches"))
            record = read_cell_record(other_dir, source)
            write_cell_record(study, cell_id, {**record, "settings": plan.cell(cell_id).settings,
                                               "reused_from": f"{name}/{source}"})
            copied[cell_id] = f"{name}/{source}"
    return copied
