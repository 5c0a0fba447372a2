"""Choose mnist5k's epochs, eps and SR lambdas (spiking network and ANN twin) on its VALIDATION split, by the
rules the digits demo used (experiments/select_demo_settings.py); the test split is never attacked. Writes
studies/selection/mnist5k.json, which studies/findings-mnist5k.yaml and spikeguard/validated_settings.json cite.

    python experiments/select_mnist5k_settings.py --jobs 2   # 32 min on 2 cores (5 December 2026, AMD EPYC)
    python experiments/select_mnist5k_settings.py --smoke    # a few minutes: tiny grids, 64 validation images, /tmp

The attacks run on the first VAL_ATTACKED validation images (clean accuracy is on the whole validation split):
PGD on all 1000 at five eps would cost several times the training.

Rules, one seed (0):
1. epochs: the smallest of EPOCH_GRID whose vanilla validation accuracy is within 1 point of the best;
2. eps: the value of EPS_GRID at which that vanilla model's validation PGD-10 accuracy (worst case over the
   four published estimators, step 2.5 eps / 10) is closest to 30%: neither trivial nor saturated;
3. lambda, for SR on the spiking network and on its ANN twin: the best validation PGD-10 accuracy among the
   values losing at most 3 validation clean points against vanilla of the same network (a value whose training
   collapsed to chance is recorded as such and is no candidate).
Candidates of one step run side by side with --jobs (one process and one torch thread each). Every candidate's
numbers are written as it finishes and a rerun skips those already there, so a killed
selection loses one candidate at most. Progress: a line per candidate on stderr and in the .log beside the
.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from select_findings_settings import say  # its sibling in experiments/ (the script's folder is on sys.path)

from spikeguard.config import TrainConfig
from spikeguard.provenance import code_version, machine_description
from spikeguard.study.selection import Candidate, best_within_drop

ROOT = Path(__file__).resolve().parents[1]
EPOCH_GRID = (5, 10)
EPS_GRID = (0.05, 0.1, 0.15, 0.2, 0.3)
LAMB_GRID = (0.003, 0.01, 0.03, 0.1)
ANN_LAMB_GRID = (0.003, 0.01, 0.03, 0.1, 0.3)
TARGET_VANILLA_PGD = 0.3
MAX_CLEAN_DROP = 0.03
BASE = {"dataset": "mnist5k", "lr": 0.1, "batch_size": 64, "seed": 0}
PGD_STEPS = 10
VAL_ATTACKED = 300
SMOKE = {"epochs": (1,), "eps": (0.1, 0.2), "lamb": (0.03,), "ann_lamb": (0.03,), "val": 64}
SUITE = {"name": "selection", "checks": {"unbounded_n": 0},
         "attacks": [{"attack": "pgd", "label": "pgd", "steps": PGD_STEPS, "estimators": "paper"}]}


def run_candidate(settings: dict, eps_list: list[float], attacked: int, folder: str) -> dict:
    """Train ``settings`` on seed 0's split and PGD-attack the first ``attacked`` validation images at each eps.
    Runs in a worker process: it loads its own data and uses one torch thread."""
    import torch

    from spikeguard.data import load_dataset
    from spikeguard.errors import UserError
    from spikeguard.evaluation import EvalConfig, evaluate_model
    from spikeguard.evaluation.suites import suite_from_dict
    from spikeguard.training import train

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = load_dataset("mnist5k", seed=0)  # seed 0's split; its validation part only is attacked
    val = torch.utils.data.Subset(data.val, range(min(attacked, len(data.val))))
    try:
        run = train(TrainConfig(**{**BASE, **settings}), Path(folder), progress=False, data=data)
    except UserError as error:  # a collapse (validation accuracy fell to chance) is a result: too strong a setting
        if not str(error).startswith("training collapsed"):
            raise
        return {"settings": settings, "collapsed": str(error), "val_clean": None, "val_pgd": None,
                "seconds": round(time.perf_counter() - t0, 1)}
    config = {eps: EvalConfig(suite=suite_from_dict(SUITE), eps=eps, progress=False) for eps in eps_list}
    return {"settings": settings, "val_clean": run.best_val_accuracy,
            "val_pgd": {f"{eps:g}": evaluate_model(run.model, val, data.num_classes, config[eps])
                        .results["ensemble_accuracy"] for eps in eps_list},
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny grids on 64 validation images, into /tmp")
    parser.add_argument("--jobs", type=int, default=1, help="candidates trained side by side (default 1)")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    epoch_grid, eps_grid, lamb_grid, ann_grid = ((SMOKE["epochs"], SMOKE["eps"], SMOKE["lamb"], SMOKE["ann_lamb"])
                                                 if args.smoke else (EPOCH_GRID, EPS_GRID, LAMB_GRID, ANN_LAMB_GRID))
    attacked = SMOKE["val"] if args.smoke else VAL_ATTACKED
    folder = Path(tempfile.mkdtemp(prefix="sg-mnist5k-smoke-")) if args.smoke else ROOT / "studies" / "selection"
    out, log = folder / "mnist5k.json", folder / "mnist5k.log"
    folder.mkdir(parents=True, exist_ok=True)
    # file_order: the first run (5 December) attacked the class-sorted file's first 300 validation images,
    # digits 0-2 only; a record without it is that run's and is redone
    identity = {"base": BASE, "suite": SUITE, "split": "validation", "attacked": attacked, "file_order": "permuted",
                "grids": [list(epoch_grid), list(eps_grid), list(lamb_grid), list(ann_grid)]}  # as JSON reads back
    record = json.loads(out.read_text()) if out.is_file() else {}
    if record.get("identity") != identity:
        record = {"identity": identity, "candidates": {}}
    work = Path(tempfile.mkdtemp(prefix="sg-mnist5k-"))
    started = time.perf_counter()
    # spawn, not fork: a forked child inherits torch's thread pools in an unusable state
    trained = False
    pool = ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn"))

    def candidates(wanted: dict[str, tuple[dict, list[float]]]) -> dict[str, dict]:
        """Train and attack each named candidate not yet in the record, ``--jobs`` at a time; each one's numbers
        are written to the record as it finishes."""
        running = {}
        nonlocal trained
        for name, (settings, eps_list) in wanted.items():
            if name not in record["candidates"]:
                say(log, f"mnist5k: {name}: {settings} queued ({time.perf_counter() - started:.0f} s so far)")
                running[pool.submit(run_candidate, settings, list(eps_list), attacked, str(work / name))] = name
                trained = True
        for future in as_completed(running):
            name = running[future]
            entry = record["candidates"][name] = future.result()
            out.write_text(json.dumps(record, indent=2) + "\n")
            say(log, f"mnist5k: {name}: {entry['collapsed']}, not a candidate ({entry['seconds']:.0f} s)"
                     if entry["val_clean"] is None else f"mnist5k: {name}: validation clean {entry['val_clean']:.3f}, "
                     f"PGD {entry['val_pgd']} ({entry['seconds']:.0f} s)")
        return {name: record["candidates"][name] for name in wanted}

    found = candidates({f"vanilla-{e}": ({"defense": "vanilla", "epochs": e}, eps_grid) for e in epoch_grid})
    vanilla = {e: found[f"vanilla-{e}"] for e in epoch_grid}
    best = max(v["val_clean"] for v in vanilla.values())
    epochs = min(e for e, v in vanilla.items() if v["val_clean"] >= best - 0.01)
    at_eps = vanilla[epochs]["val_pgd"]
    eps = min(eps_grid, key=lambda e: abs(at_eps[f"{e:g}"] - TARGET_VANILLA_PGD))
    say(log, f"mnist5k: epochs {epochs}, eps {eps:g} (vanilla validation PGD {at_eps[f'{eps:g}']:.3f})")
    chosen = {"epochs": epochs, "eps": eps}
    grids = {"snn": (lamb_grid, {}), "ann": (ann_grid, {"network": "ann"})}
    wanted = {f"sr-snn-{lamb:g}": ({"defense": "sr", "lamb": lamb, "epochs": epochs}, [eps]) for lamb in lamb_grid}
    wanted["vanilla-ann"] = ({"defense": "vanilla", "epochs": epochs, "network": "ann"}, [eps])
    wanted |= {f"sr-ann-{lamb:g}": ({"defense": "sr", "lamb": lamb, "epochs": epochs, "network": "ann"}, [eps])
               for lamb in ann_grid}
    found = candidates(wanted)  # side by side, the slow spiking ones first: the ANN twin's fill the gaps
    pool.shutdown()
    for network, (grid, _) in grids.items():
        reference = vanilla[epochs] if network == "snn" else found["vanilla-ann"]
        runs = [found[f"sr-{network}-{lamb:g}"] for lamb in grid]
        runs = [r for r in runs if r["val_clean"] is not None]  # a collapsed training is no candidate
        choice = best_within_drop([Candidate(r["settings"], r["val_clean"], r["val_pgd"][f"{eps:g}"]) for r in runs],
                                  reference["val_clean"], MAX_CLEAN_DROP)
        collapsed = len(grid) - len(runs)
        why = choice.why + (f"; {collapsed} of the grid's {len(grid)} collapsed to chance in training" if collapsed else "")
        chosen[f"lamb_{network}"] = {"lamb": choice.candidate.settings["lamb"], "reached": choice.reached, "why": why}
        say(log, f"mnist5k: SR on {network}: lambda {choice.candidate.settings['lamb']:g} ({why})")
    record["chosen"] = chosen
    if trained:  # a rerun that only reads the record back keeps the machine and --jobs of the runs that trained
        record["machine"], record["threads"], record["jobs"] = machine_description(), 1, args.jobs
    record["code_version"] = code_version()
    record["seconds"] = round(sum(c["seconds"] for c in record["candidates"].values()), 1)
    out.write_text(json.dumps(record, indent=2) + "\n")
    say(log, f"mnist5k: chose {json.dumps(chosen)}; wrote {out}")


if __name__ == "__main__":
    main()
