"""Issue 21's traps (tests/traps.py) around a trained vanilla digits SNN, evaluated by spikeguard's quick or
strong suite, beside the attack that knows each trick (tests/traps.trick_aware: PGD-100 with CE and margin
losses under seven gradient sources of the honest base). Digits test split, eps 0.15, the first n samples.

Each trap's headline, its label, the flags, the escalation's number and time, or the one-line refusal or
crash, go into --out as they finish (a rerun skips the traps already there). Run it with the code before the
issue (a checkout of d6d8ce0 on PYTHONPATH) and after, for the before/after table of the closing note:

  python experiments/trust_traps.py --base RUN/best.pt --suite quick --label after --out FILE [--n 100]
  python experiments/trust_traps.py --aware --base RUN/best.pt --out FILE   (the trick-aware numbers)
  python experiments/trust_traps.py --combine OUT.json IN.json ...        (one file, and the markdown table)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import traps  # noqa: E402

from spikeguard.data import load_dataset, stack  # noqa: E402
from spikeguard.errors import UserError  # noqa: E402
from spikeguard.evaluation import EvalConfig, Target, run_evaluation  # noqa: E402

EPS = 0.15
TRAPS = {
    "flat_liar": traps.FlatLiar, "dead_zone": traps.dead_zone, "flipped_wrapper": traps.FlippedWrapper,
    "scaled_logits": traps.ScaledLogits, "python_random": traps.PythonRandomNoise, "frozen": traps.frozen,
    "batch_statistics": traps.batch_statistics}


def load_base(path: str) -> torch.nn.Module:
    from spikeguard.checkpoint import load_model

    model, _ = load_model(path)
    return model.eval()


def evaluate(name: str, base, suite: str, n: int, data) -> dict:
    start = time.perf_counter()
    try:
        record = run_evaluation(EvalConfig(suite=suite, eps=EPS, n=n, progress=False),
                                Target.of(TRAPS[name](base), data.test, 10, train=data.train)).results
    except UserError as e:
        return {"outcome": "refused", "message": str(e), "seconds": round(time.perf_counter() - start, 1)}
    except Exception as e:  # noqa: BLE001 - a crash is a finding of the before/after table
        return {"outcome": "crashed", "message": f"{type(e).__name__}: {str(e)[:300]}",
                "where": traceback.format_exc().splitlines()[-3].strip(), "seconds": round(time.perf_counter() - start, 1)}
    escalation = record.get("escalation") or {}
    headline = record.get("headline") or {}
    return {"outcome": "evaluated", "headline": headline.get("accuracy"), "label": headline.get("label"),
            "before_escalation": record.get("ensemble_accuracy_before_escalation", record["ensemble_accuracy"]),
            "flags": sorted({f["name"] for f in record["flags"]}), "stochastic": record.get("stochastic"),
            "escalation_seconds": escalation.get("seconds"), "seconds": round(time.perf_counter() - start, 1)}


def trick_aware(base, n: int, data) -> dict:
    """The trick-aware accuracy of the base every decision-keeping trap shares (n samples)."""
    _, (x, y) = stack(data.train), stack(data.test)
    start = time.perf_counter()
    accuracy = traps.trick_aware(base, x[:n], y[:n], EPS, steps=100).float().mean().item()
    return {"accuracy": accuracy, "seconds": round(time.perf_counter() - start, 1),
            "what": "PGD-100, CE and margin losses, under " + ", ".join(traps.TRICK_AWARE_MEMBERS)}


def cell(run: dict | None) -> str:
    """One table cell: the headline (and "nb" when not a bound), or what happened instead."""
    if run is None:
        return "not run"
    if run["outcome"] != "evaluated":
        return run["outcome"]
    text = f"{100 * run['headline']:.0f}" + (" nb" if run["label"] == "not a bound" else "")
    return text + (" (EoT)" if run.get("stochastic") else "")


def combine(out: Path, parts: list[Path]) -> None:
    """Merge the per-run files into ``out`` and print the before/after table (markdown)."""
    table: dict = {}
    for part in parts:
        table.update(json.loads(part.read_text()))
    out.write_text(json.dumps(table, indent=2) + "\n")
    runs = ("before/quick", "after/quick", "before/strong", "after/strong")
    print("| trap | " + " | ".join(runs) + " | flags after (quick) | escalation time after (quick, strong) |")
    print("|---|" + "---|" * (len(runs) + 2))
    for name in TRAPS:
        got = [table.get(r, {}).get(name) for r in runs]
        after = got[1] or {}
        times = " / ".join(f"{run['escalation_seconds']:.0f} s" if run and run.get("escalation_seconds") else "-"
                           for run in (got[1], got[3]))
        print(f"| {name} | " + " | ".join(cell(g) for g in got) + f" | {', '.join(after.get('flags', [])) or '-'} | "
              f"{times} |")


def main() -> None:
    if sys.argv[1:2] == ["--combine"]:
        combine(Path(sys.argv[2]), [Path(a) for a in sys.argv[3:]])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="checkpoint of the honest base SNN")
    parser.add_argument("--suite", default="quick")
    parser.add_argument("--label", default="after", help="which code ran: before or after")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--only", nargs="*", help="these traps only")
    parser.add_argument("--aware", action="store_true", help="compute the trick-aware number only")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("digits", seed=0)
    base = load_base(args.base)
    out = Path(args.out)
    table = json.loads(out.read_text()) if out.exists() else {"n": args.n, "eps": EPS, "base": args.base}
    if args.aware:
        table["trick_aware"] = trick_aware(base, args.n, data)
        print("trick-aware", table["trick_aware"], flush=True)
        out.write_text(json.dumps(table, indent=2) + "\n")
        return
    runs = table.setdefault(f"{args.label}/{args.suite}", {})
    for name in args.only or TRAPS:
        if name in runs:
            continue
        runs[name] = evaluate(name, base, args.suite, args.n, data)
        print(args.label, args.suite, name, json.dumps(runs[name]), flush=True)
        out.write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
