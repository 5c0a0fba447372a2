"""A study's ensemble cells (plan key ``ensembles``): the members' best checkpoints averaged into one model
(spikeguard/models/ensemble.py) and evaluated with the plan's evaluations like any cell, after every member
has finished. Its numbers (spikeguard/study/cell.py, ensemble_numbers) take its energy as the members'
summed: an ensemble of five runs five networks per inference."""

from __future__ import annotations

import hashlib
from pathlib import Path

from spikeguard.errors import UserError


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
