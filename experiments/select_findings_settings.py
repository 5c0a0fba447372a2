"""Choose the findings studies' settings on the digits VALIDATION split (docs/findings.md); the test split is
never loaded. Writes studies/selection/QUESTION.json, which the findings presets cite.

    python experiments/select_findings_settings.py combinations   # question 2: lambda of SR*, SR+RAT, SR+GR
    python experiments/select_findings_settings.py surrogate      # question 3: SR's lambda under sigmoid, atan
    python experiments/select_findings_settings.py ann            # question 4: SR's lambda on the ANN twin
    python experiments/select_findings_settings.py distill        # question 2: the distilled SR student

Every candidate trains with the demo's validated settings (spikeguard/demo_selection.json: epochs, eps, lr,
batch size; seed 0) and is attacked on the validation split by the demo's selection attack (PGD-10, step
2.5 eps / 10, worst case over the four published estimators). A candidate's result is written as it finishes,
and a rerun skips the candidates the file already holds, so a killed selection loses one candidate at most.
Progress: one line per candidate on stderr and in studies/selection/QUESTION.log.

The distilled student's teachers are five SR models (lambda 0.03, seeds 0-4 for their initialisation and data
order) trained here first on seed 0's training split, the one the student trains on: a teacher trained on
another seed's split would have seen some of these validation images, and the student, copying it, would score
them too well. (The study's students are taught by the study's SR cells, each of its own split; only their
best-epoch choice reads a validation split, never the test split.)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from spikeguard.config import TrainConfig
from spikeguard.demo import demo_selection
from spikeguard.provenance import code_version, machine_description
from spikeguard.study.selection import Candidate, best_near_clean, best_within_drop

ROOT = Path(__file__).resolve().parents[1]
MAX_CLEAN_DROP = 0.03   # the demo's rule: lose at most 3 validation clean points against vanilla
NEAR_CLEAN = 0.02       # question 2: within 2 validation clean points of SR alone (issue 25)
LAMBS = (0.01, 0.03, 0.1)

# question -> (reference candidate, {what is chosen: candidates}, rule)
QUESTIONS = {
    "combinations": ({"defense": "sr", "lamb": 0.03}, {
        "sr_star": [{"defense": "sr_star", "lamb": lamb} for lamb in LAMBS],
        "sr_rat": [{"defense": "sr_rat", "lamb": lamb} for lamb in LAMBS],
        "sr_gr": [{"defense": "sr_gr", "lamb": lamb, "gr_lamb": gr} for lamb in (0.01, 0.03) for gr in (0.1, 1.0)],
    }, "near_clean"),
    "surrogate": (None, {
        estimator: [{"defense": "vanilla", "train_estimator": estimator}]
        + [{"defense": "sr", "lamb": lamb, "train_estimator": estimator} for lamb in LAMBS]
        for estimator in ("sigmoid:4", "atan:2")}, "within_drop"),
    "ann": (None, {"ann": [{"defense": "vanilla", "network": "ann"}]
                   + [{"defense": "sr", "lamb": lamb, "network": "ann"} for lamb in (0.003, 0.01, 0.03, 0.1, 0.3)]},
            "within_drop"),
    "distill": ({"defense": "sr", "lamb": 0.03}, {
        "sr_distill": [{"defense": "sr_distill", "lamb": lamb, "kd_alpha": alpha}
                       for lamb, alpha in ((0.01, 0.9), (0.03, 0.9), (0.1, 0.9), (0.03, 0.5))]}, "near_clean"),
}
TEACHERS = [{"defense": "sr", "lamb": 0.03, "seed": seed} for seed in range(5)]  # sr_distill's, on seed 0's split


def say(log: Path, text: str) -> None:
    line = f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} {text}"
    print(line, file=sys.stderr, flush=True)
    with open(log, "a") as handle:
        handle.write(line + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", choices=sorted(QUESTIONS))
    args = parser.parse_args()
    import torch

    from spikeguard.data import load_dataset
    from spikeguard.evaluation import EvalConfig, evaluate_model
    from spikeguard.evaluation.suites import suite_from_dict
    from spikeguard.training import train

    torch.set_num_threads(1)
    chosen = demo_selection()["chosen"]
    base = {"dataset": "digits", "epochs": chosen["epochs"], "eps": chosen["eps"], "lr": chosen["lr"],
            "batch_size": chosen["batch_size"], "seed": 0}
    suite = {"name": "selection", "checks": {"unbounded_n": 0},
             "attacks": [{"attack": "pgd", "label": "pgd", "steps": chosen["eval_pgd_steps"], "estimators": "paper"}]}
    out = ROOT / "studies" / "selection" / f"{args.question}.json"
    log = out.with_suffix(".log")
    out.parent.mkdir(parents=True, exist_ok=True)
    identity = {"base": base, "suite": suite, "split": "validation"}
    record = json.loads(out.read_text()) if out.is_file() else {}
    if record.get("identity") != identity:
        record = {"identity": identity, "candidates": []}
    done = {json.dumps(c["settings"], sort_keys=True): c for c in record["candidates"]}
    reference, groups, rule = QUESTIONS[args.question]
    wanted = ([reference] if reference else []) + [s for group in groups.values() for s in group]
    data = load_dataset("digits", seed=0)  # the split the studies' seed-0 cells train on; its val part only
    tmp = Path(tempfile.mkdtemp(prefix="sg-select-"))
    selection_suite = suite_from_dict(suite)
    started = time.perf_counter()
    teachers: list[str] = []
    for number, settings in enumerate(wanted, start=1):
        key = json.dumps(settings, sort_keys=True)
        if key in done:
            continue
        say(log, f"{args.question}: candidate {number} of {len(wanted)}: {settings} "
                 f"({time.perf_counter() - started:.0f} s so far)")
        t0 = time.perf_counter()
        extra = {}
        if settings["defense"] == "sr_distill":
            if not teachers:
                t_teachers = time.perf_counter()
                for index, teacher in enumerate(TEACHERS, start=1):
                    say(log, f"{args.question}: teacher {index} of {len(TEACHERS)}: {teacher} on seed 0's split")
                    teachers.append(str(train(TrainConfig(**{**base, **teacher}), tmp / f"teacher{index}",
                                              progress=False, data=data).run_dir))
                record["teachers"] = {"settings": TEACHERS, "split": "seed 0's training split",
                                      "seconds": round(time.perf_counter() - t_teachers, 1)}
                t0 = time.perf_counter()  # the teachers' time is not the candidate's
            extra = {"teacher": teachers}
        run = train(TrainConfig(**{**base, **settings, **extra}), tmp / f"run{number}", progress=False, data=data)
        attacked = evaluate_model(run.model, data.val, data.num_classes,
                                  EvalConfig(suite=selection_suite, eps=base["eps"], progress=False))
        entry = {"settings": settings, "val_clean": run.best_val_accuracy,
                 "val_robust": attacked.results["ensemble_accuracy"], "seconds": round(time.perf_counter() - t0, 1)}
        done[key] = entry
        record["candidates"] = [done[json.dumps(s, sort_keys=True)] for s in wanted
                                if json.dumps(s, sort_keys=True) in done]
        out.write_text(json.dumps(record, indent=2) + "\n")
        say(log, f"{args.question}: {settings}: validation clean {entry['val_clean']:.3f}, robust "
                 f"{entry['val_robust']:.3f} ({entry['seconds']:.0f} s)")
    candidates = {json.dumps(c["settings"], sort_keys=True): Candidate(c["settings"], c["val_clean"], c["val_robust"])
                  for c in record["candidates"]}
    record["chosen"] = {}
    for name, group in groups.items():
        members = [candidates[json.dumps(s, sort_keys=True)] for s in group]
        if rule == "near_clean":
            choice = best_near_clean(members, candidates[json.dumps(reference, sort_keys=True)].val_clean, NEAR_CLEAN)
        else:  # the group's vanilla is the reference; SR's candidates are the rest
            choice = best_within_drop(members[1:], members[0].val_clean, MAX_CLEAN_DROP)
        record["chosen"][name] = {"settings": choice.candidate.settings, "reached": choice.reached, "why": choice.why}
        say(log, f"{args.question}: {name}: chose {choice.candidate.settings} ({choice.why})")
    record["machine"], record["threads"], record["code_version"] = machine_description(), 1, code_version()
    record["seconds"] = round(sum(c["seconds"] for c in record["candidates"]), 1)
    out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
