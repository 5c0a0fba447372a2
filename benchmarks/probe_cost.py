"""What issue 21's probes cost an honest model's `quick` evaluation, as a ratio measured in one run.

The probes (spikeguard/evaluation/probes.py: agreement, dead surrogates, flat outputs after the suite; batch
dependence and softmax saturation before it) are timed inside the evaluation by wrapping each probe function
with a clock, in process CPU time (a shared machine's waiting does not count); the ratio is their time over
the rest of the evaluation's. Models: the demo's vanilla and SR SNNs (checkpoints of a `spikeguard demo` run)
and tutorial-style SpikingJelly and snnTorch CSNNs (tests/ecosystem_models.py) trained here; digits test
split, eps 0.15, the first n samples. Issue 21 allows at most 15% (ratio 0.15).

Run: python benchmarks/probe_cost.py --demo DIR [--n 200] [--out benchmarks/results/cpu_probe_cost.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import ecosystem_models  # noqa: E402

from spikeguard import load  # noqa: E402
from spikeguard.data import load_dataset, stack  # noqa: E402
from spikeguard.evaluation import batch_dependence, dead_surrogates, evaluate_model, flat_outputs, probes  # noqa: E402
from spikeguard.evaluation import runner as runner_module  # noqa: E402

SPENT = {"probes": 0.0}


def timed(module, name: str) -> None:
    """Replace ``module.name`` by the same function that adds its CPU time to SPENT."""
    original = getattr(module, name)

    @functools.wraps(original)
    def clocked(*args, **kwargs):
        start = time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            SPENT["probes"] += time.process_time() - start

    setattr(module, name, clocked)


def instrument() -> None:
    # the probes after the suite are called through probes.after_suite; those before it through runner.py's
    # names (batch_dependence.check, softmax_saturation)
    timed(probes, "after_suite")
    timed(batch_dependence, "check")
    timed(runner_module, "softmax_saturation")
    assert dead_surrogates and flat_outputs  # called inside after_suite, so counted there


def cost(model, data, n: int) -> dict:
    SPENT["probes"] = 0.0
    start = time.process_time()
    record = evaluate_model(model, data.test, 10, suite="quick", eps=0.15, n=n, progress=False,
                            train=data.train).record
    total = time.process_time() - start
    return {"total_cpu_seconds": round(total, 2), "probe_cpu_seconds": round(SPENT["probes"], 2),
            "ratio": round(SPENT["probes"] / max(total - SPENT["probes"], 1e-9), 4), "flags": record.flag_names,
            "headline": record.headline.accuracy if record.headline else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", required=True)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    instrument()
    data = load_dataset("digits", seed=0)
    x_train, y_train = stack(data.train)
    models = {d: load(Path(args.demo) / "runs" / d / "best.pt") for d in ("vanilla", "sr")}
    for name, build in (("spikingjelly_csnn", ecosystem_models.JellyCSNN), ("snntorch_csnn", ecosystem_models.TorchCSNN)):
        torch.manual_seed(0)
        models[name] = ecosystem_models.train(build(), x_train, y_train, epochs=5)
    table = {"what": __doc__.splitlines()[0], "machine": f"{platform.processor() or platform.machine()}, 1 thread, "
             "no GPU", "n": args.n, "eps": 0.15, "limit": 0.15, "models": {}}
    for name, model in models.items():
        table["models"][name] = cost(model, data, args.n)
        print(name, json.dumps(table["models"][name]), flush=True)
    table["worst_ratio"] = max(m["ratio"] for m in table["models"].values())
    print(f"worst ratio {table['worst_ratio']:.3f} (limit 0.15)")
    if args.out:
        Path(args.out).write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
