"""The confidence confound, measured: a vanilla model whose logits are multiplied by a constant c keeps every
decision, yet its ||df/dx||_1 and its adversarial/random gap in f units move with c, while ||dm/dx||_1 scales
by c exactly and the flip distance m / ||dm/dx||_1 and the gap in margin units do not move at all.

Runs on the vanilla cells of a digits-lambda study (their best.pt) and sets the numbers beside the SR cells'
analyses. Same test images, eps, attack (the quick suite's per-sample strongest example) and noise draws as the
study's analysis (analysis settings from its plan; no bisection, which the confound does not need):

  python experiments/logit_scale_confound.py STUDY_DIR --out experiments/results/logit_scale_confound_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from spikeguard.analysis.analyze import AnalysisSettings, analyze_model, suite_attacks
from spikeguard.checkpoint import load_model
from spikeguard.data import stack
from spikeguard.rundir import load_splits
from spikeguard.study.state import read_plan

SCALES = (0.25,)


class ScaledLogits(nn.Module):
    """The same network with its logits multiplied by ``scale`` (no decision changes for scale > 0)."""

    def __init__(self, model: nn.Module, scale: float):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.model(x)


def clean_medians(summary: dict) -> dict:
    mech = summary["mechanism"]
    clean = mech["estimators"][mech["training_estimator"]]["clean"]
    gap = summary["per_eps"][0]
    return {"f_l1": clean["f_l1"]["median"], "m_l1": clean["m_l1"]["median"],
            "f_one_minus_f": clean["f_one_minus_f"]["median"], "flip_distance": clean["flip_distance"]["median"],
            "gap_ratio_f": gap["ratio_abs"], "gap_ratio_margin": gap["ratio_margin_abs"],
            "accuracy_clean": gap["accuracy_clean"], "accuracy_adv": gap["accuracy_adv"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    plan = read_plan(args.study)
    options = dict(plan.analyze or {})
    settings = AnalysisSettings(eps=tuple(options["eps"]), n=options["n"], draws=options["draws"], bisect_steps=0)
    torch.set_num_threads(1)
    rows = []
    for cell in sorted((args.study / "cells").glob("defense-*")):
        if not cell.is_dir():
            continue
        analysis = json.loads((cell / "analysis" / "analysis.json").read_text())
        entry = {"cell": cell.name, "defense": analysis["defense"], "lamb": analysis["lamb"],
                 "scale": 1.0, **clean_medians(analysis)}
        rows.append(entry)
        print(json.dumps(entry), flush=True)
        if analysis["defense"] != "vanilla":
            continue
        model, ckpt = load_model(cell / "best.pt")
        x, y = stack(load_splits(ckpt, None).test, settings.n)
        for scale in SCALES:
            start = time.perf_counter()
            attack_at, flip_at, _ = suite_attacks(settings.seed)
            summary, _ = analyze_model(ScaledLogits(model, scale), x, y, settings, attack_at, flip_at)
            entry = {"cell": cell.name, "defense": "vanilla", "lamb": None, "scale": scale, **clean_medians(summary),
                     "seconds": time.perf_counter() - start}
            rows.append(entry)
            print(json.dumps(entry), flush=True)
    groups: dict[str, list[dict]] = {}
    for row in rows:
        key = f"{row['defense']}" + (f" lambda {row['lamb']:g}" if row["lamb"] else "") + (
            f" logits x{row['scale']:g}" if row["scale"] != 1.0 else "")
        groups.setdefault(key, []).append(row)
    table = {key: {k: statistics.fmean(r[k] for r in members) for k in
                   ("f_l1", "m_l1", "f_one_minus_f", "flip_distance", "gap_ratio_f", "gap_ratio_margin",
                    "accuracy_clean", "accuracy_adv")} | {"seeds": len(members)}
             for key, members in groups.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"study": str(args.study), "settings": vars(settings) | {"eps": list(settings.eps)},
                                    "machine": "2-core Intel Xeon, no GPU, 1 torch thread", "rows": rows,
                                    "means_over_seeds": table}, indent=1) + "\n")
    print("| models | ||df/dx||_1 | ||dm/dx||_1 | f (1 - f) | flip distance | gap, f units | gap, margin units |")
    print("|---|---|---|---|---|---|---|")
    for key, v in table.items():
        print(f"| {key} | {v['f_l1']:.3g} | {v['m_l1']:.3g} | {v['f_one_minus_f']:.3g} | {v['flip_distance']:.3g} | "
              f"{v['gap_ratio_f']:.3g} | {v['gap_ratio_margin']:.3g} |")


if __name__ == "__main__":
    main()
