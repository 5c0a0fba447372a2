"""A study's ensemble cells (plan key ``ensembles``): the members' best checkpoints averaged into one model
(spikeguard/models/ensemble.py) and evaluated with the plan's evaluations like any cell, after every member
has finished. Its energy is the members' summed: an ensemble of five runs five networks per inference."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from spikeguard.errors import UserError
from spikeguard.study.plan import StudyPlan
from spikeguard.study.state import cell_dir


def ensemble_target(members: list[Path], data_dir: str | None, download: bool):
    """The Target of the members' logit average, on the test split they share (every seed of an image data set
    draws its training and validation images from the same remainder of one fixed test split)."""
    from spikeguard.checkpoint import load_model, model_name
    from spikeguard.evaluation.targets import Target
    from spikeguard.models.ensemble import LogitAverage
    from spikeguard.provenance import file_sha256
    from spikeguard.rundir import BEST, load_splits

    models, checkpoints = [], []
    for member in members:
        if not (member / BEST).is_file():
            raise UserError(f"ensemble member '{member.name}' has no {BEST}: an ensemble is evaluated from its "
                            "members' checkpoints, so it needs them on this machine")
        model, ckpt = load_model(member)
        models.append(model)
        checkpoints.append(ckpt)
    datasets = {ckpt["dataset"] for ckpt in checkpoints}
    if len(datasets) > 1:
        raise UserError(f"ensemble members were trained on different data sets ({', '.join(sorted(datasets))})")
    data = load_splits(checkpoints[0], data_dir, download)
    shas = [file_sha256(member / BEST) for member in members]
    name = f"ensemble of {len(models)} x {model_name(checkpoints[0])}"
    return Target(LogitAverage(models).eval(), name, checkpoints[0]["dataset"], data.test, data.num_classes,
                  checkpoints[0].get("config", {}).get("eps"), "; ".join(str(m / BEST) for m in members),
                  hashlib.sha256("".join(shas).encode()).hexdigest(), data.frame_range, train=data.train)


def ensemble_numbers(study: Path, plan: StudyPlan, cell_id: str) -> dict[str, Any]:
    """The ensemble's evaluations, and its activity and energy from its members' analyses: SOPs and energy
    summed, the firing rate their mean (None where a member has no analysis)."""
    from spikeguard.study.cell import ANALYSIS, analysis_numbers, evaluation_numbers

    cell = plan.cell(cell_id)
    evaluations = evaluation_numbers(plan, cell_dir(study, cell_id))
    numbers: dict[str, Any] = {"members": list(cell.members), "evaluations": evaluations,
                               "clean": evaluations[0]["clean"], "worst_case": evaluations[0]["headline"]}
    analyses = []
    for member in cell.members:
        path = cell_dir(study, member) / ANALYSIS / "analysis.json"
        if not path.is_file():
            return numbers
        analyses.append(analysis_numbers(json.loads(path.read_text())))

    def total(key: str) -> float | None:
        values = [a.get(key) for a in analyses]
        return None if any(v is None for v in values) else float(sum(v for v in values if v is not None))

    rates = [float(a["firing_rate"]) for a in analyses if a.get("firing_rate") is not None]
    numbers["analysis"] = {"energy_joules": total("energy_joules"), "sops": total("sops"),
                           "ann_energy_joules": total("ann_energy_joules"), "analog_macs": total("analog_macs"),
                           "firing_rate": sum(rates) / len(rates) if len(rates) == len(analyses) else None,
                           "from_members": True}
    return numbers
