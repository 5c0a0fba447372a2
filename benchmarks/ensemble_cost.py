"""Cost of the estimator ensemble: the full bank as a cascade against the same bank on every sample, both
against one estimator alone (our PGD with early stop, and textbook PGD on every sample for every step),
on the demo's vanilla model (digits, demo settings), in one run.

    python benchmarks/ensemble_cost.py [--run RUN_DIR] [--n 360] [--steps 20] [--out results/ensemble_cost.json]

Without --run, a vanilla model is trained with the demo's settings first (about a minute on 2 cores). The
claim is the ratio of wall times measured in this one run; absolute seconds depend on the machine's load.
Target: the cascade costs at most 1.5x the single-estimator run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from spikeguard.checkpoint import load_model
from spikeguard.data import load_dataset
from spikeguard.demo import demo_config, demo_selection
from spikeguard.evaluation import bank
from spikeguard.evaluation.runner import Plan, run_suite
from spikeguard.evaluation.suites import suite_from_dict
from spikeguard.evaluation.summary import finish_rows
from spikeguard.training import train


def vanilla_model(run: Path | None, data):
    if run is not None:
        return load_model(run)[0]
    cfg = demo_config("vanilla", demo_selection()["chosen"], seed=0)
    return train(cfg, Path(tempfile.mkdtemp()) / "vanilla", progress=False, data=data).model


def timed(model, data, estimators, cascade: bool, steps: int, n: int, eps: float) -> dict:
    suite = suite_from_dict({"name": "bench", "cascade": cascade, "checks": {"unbounded_n": 0},
                             "attacks": [{"attack": "pgd", "steps": steps, "estimators": list(estimators)}]})
    start = time.perf_counter()
    rows, _ = run_suite(Plan(model, data.test, suite, eps, data.num_classes, n=n, progress=False))
    seconds = time.perf_counter() - start
    rows = finish_rows(rows, [suite.attacks[0].label])
    return {"estimators": len(estimators), "cascade": cascade, "seconds": round(seconds, 3),
            "accuracy": sum(r["robust"] for r in rows) / len(rows)}


def textbook(model, data, steps: int, n: int, eps: float) -> dict:
    """One estimator, every sample, every step, last iterate (PGD as ANN libraries run it): the cost most
    published SNN evaluations pay for one estimator."""
    from spikeguard.attacks import pgd
    from spikeguard.data import stack
    from spikeguard.runtime import eval_mode

    x, y = stack(data.test, n)
    start = time.perf_counter()
    with eval_mode(model):
        x_adv = pgd(model, x, y, eps, 2.5 * eps / steps, steps, generator=torch.Generator().manual_seed(0),
                    keep_best=False)
        with torch.no_grad():
            accuracy = (model(x_adv).argmax(1) == y).float().mean().item()
    return {"estimators": 1, "cascade": False, "early_stop": False, "seconds": round(time.perf_counter() - start, 3),
            "accuracy": accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="a trained digits run (default: train vanilla)")
    parser.add_argument("--n", type=int, default=360)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ensemble_cost.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = load_dataset("digits", seed=0)
    model = vanilla_model(args.run, data)
    eps = demo_selection()["chosen"]["eps"]
    plain = textbook(model, data, args.steps, args.n, eps)
    single = timed(model, data, ["triangle:1"], True, args.steps, args.n, eps)
    cascade = timed(model, data, bank.BANK, True, args.steps, args.n, eps)
    full = timed(model, data, bank.BANK, False, args.steps, args.n, eps)
    record = {
        "benchmark": "ensemble_cost", "model": "digits vanilla (demo settings)", "n": args.n, "eps": eps,
        "attack": f"pgd-{args.steps}", "bank": list(bank.BANK), "textbook_single": plain, "single": single,
        "cascade": cascade, "full": full,
        "cascade_over_single": round(cascade["seconds"] / single["seconds"], 3),
        "cascade_over_textbook_single": round(cascade["seconds"] / plain["seconds"], 3),
        "full_over_single": round(full["seconds"] / single["seconds"], 3),
        "full_over_cascade": round(full["seconds"] / cascade["seconds"], 3),
        "target_cascade_over_single": 1.5, "machine": platform.platform(), "threads": torch.get_num_threads(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
