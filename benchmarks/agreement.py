"""The forward/backward agreement probe (spikeguard/evaluation/agreement.py) on honest models and on the traps
of tests/traps.py: the fraction of clean-correct samples on which no member's gradient moves the output the
way it says. Honest models set DISAGREEMENT_THRESHOLD; every trap class must sit at twice it or more.

Honest: the six demo defenses (checkpoints of a `spikeguard demo --out DIR` run) and tutorial-style
SpikingJelly and snnTorch CSNNs (tests/ecosystem_models.py) trained here; traps around the demo's vanilla
SNN. Digits test split (360 samples), the demo's eps, the quick suite's gradient members, every
clean-correct sample probed (n >= 200).

Run: python benchmarks/agreement.py --demo DIR [--out benchmarks/results/cpu_agreement.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import ecosystem_models  # noqa: E402
import traps  # noqa: E402

from spikeguard import load  # noqa: E402
from spikeguard.adapters import preserved_state  # noqa: E402
from spikeguard.data import load_dataset, stack  # noqa: E402
from spikeguard.evaluation import agreement as probe  # noqa: E402
from spikeguard.evaluation import bank  # noqa: E402
from spikeguard.evaluation.suites import load_suite  # noqa: E402

DEFENSES = ("vanilla", "at", "rat", "gr", "sr", "sr_star")


def gradient_members(suite: str) -> tuple[str, ...]:
    spec = load_suite(suite)
    return tuple(dict.fromkeys(m for a in spec.attacks if a.white_box for m in bank.resolve(a.estimators)))


def measure(model, x, y, eps, members) -> dict:
    twins: dict = {}
    start = time.perf_counter()
    with preserved_state(model):
        result = probe.probe_agreement(model, x, y, eps, members, lambda m: bank.under(model, m, twins),
                                       samples=len(x))
    return {**result, "seconds": round(time.perf_counter() - start, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", required=True, help="a spikeguard demo output directory (runs/DEFENSE/best.pt)")
    parser.add_argument("--suite", default="quick")
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("digits", seed=0)
    (x_train, y_train), (x, y) = stack(data.train), stack(data.test)
    eps = json.loads((Path(args.demo) / "results.json").read_text())["eps"]
    members = gradient_members(args.suite)
    honest, trapped = {}, {}
    for defense in DEFENSES:
        honest[defense] = measure(load(Path(args.demo) / "runs" / defense / "best.pt"), x, y, eps, members)
        print(defense, json.dumps(honest[defense]), flush=True)
    for name, build in (("spikingjelly_csnn", ecosystem_models.JellyCSNN),
                        ("snntorch_csnn", ecosystem_models.TorchCSNN)):
        torch.manual_seed(0)  # the same initial weights on every run
        model = ecosystem_models.train(build(), x_train, y_train, epochs=5)
        honest[name] = measure(model, x, y, eps, members)
        print(name, json.dumps(honest[name]), flush=True)
    base = load(Path(args.demo) / "runs" / "vanilla" / "best.pt")
    for name, model in (("flat_liar", traps.FlatLiar(base)), ("flipped_wrapper", traps.FlippedWrapper(base)),
                        ("dead_zone", traps.dead_zone(base)), ("scaled_logits", traps.ScaledLogits(base))):
        trapped[name] = measure(model, x, y, eps, members)
        print(name, json.dumps(trapped[name]), flush=True)
    worst = max(r["fraction"] for r in honest.values())
    table = {"what": __doc__.splitlines()[0], "machine": f"{platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} thread, no GPU", "eps": eps, "suite": args.suite, "members": members,
             "threshold": probe.DISAGREEMENT_THRESHOLD, "honest_worst": worst, "honest": honest, "traps": trapped}
    print(f"honest worst {worst:.3f}; threshold {probe.DISAGREEMENT_THRESHOLD}")
    if args.out:
        Path(args.out).write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
