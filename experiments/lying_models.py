"""The strong suite against models built to lie to gradient attacks (tests/lying_models.py), before and
after the escalation, beside the attack that knows each trick (PGD-50 with 2 restarts on the honest model
inside: the strong suite's own PGD). Digits test split, eps 0.1, n samples (default 300).

Run: python experiments/lying_models.py [--n 300] [--out results.json]   (minutes on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from lying_models import LIARS, honest_classifier, trick_aware_accuracy  # noqa: E402

from spikeguard.data import load_dataset, stack  # noqa: E402
from spikeguard.evaluation import EvalConfig, Target, run_evaluation  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("digits", seed=0)
    (x_train, y_train), (x_test, y_test) = stack(data.train), stack(data.test)
    honest = honest_classifier(x_train, y_train)
    aware = trick_aware_accuracy(honest, x_test[:args.n], y_test[:args.n], args.eps, 50, restarts=2)
    print(f"trick-aware PGD-50 x 2 restarts: {aware:.3f} (n {args.n}, eps {args.eps})", flush=True)
    table = {"n": args.n, "eps": args.eps, "trick_aware": aware, "liars": {}}
    for name, liar in LIARS.items():
        start = time.perf_counter()
        record = run_evaluation(EvalConfig(suite="strong", eps=args.eps, n=args.n, batch_size=100, progress=False),
                                Target.of(liar(honest), data.test, 10, train=data.train))
        r = record.results
        table["liars"][name] = {"strong_suite": r.get("ensemble_accuracy_before_escalation", r["ensemble_accuracy"]),
                                "escalated": r["ensemble_accuracy"], "headline": r["headline"]["label"],
                                "flags": sorted({f["name"] for f in r["flags"]}),
                                "escalation_seconds": (r.get("escalation") or {}).get("seconds"),
                                "seconds": round(time.perf_counter() - start, 1)}
        print(name, json.dumps(table["liars"][name]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
