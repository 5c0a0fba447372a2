"""Training step time against the number of time steps T and against the batch size, vanilla and SR.

T in (2, 4, 8, 16) at a fixed batch, then batch sizes at T = 8, on one model (VGG-11 by default). At each
setting vanilla and SR are timed in turn (median over rounds), so their ratio is measured under the same
load. The last output line is one JSON object.

  python benchmarks/scaling.py [--model vgg11] [--batch 4] [--batches 2,4,8,16] [--device cuda]
"""

from __future__ import annotations

import argparse

from common import (
    Stepper,
    cifar_batch,
    cifar_model,
    emit,
    environment,
    interleaved_times,
    medians_and_ratios,
    parse_run_args,
)

DEFENSES = ("vanilla", "sr")


def measure(args, device, T: int, batch: int) -> dict:
    model = cifar_model(args.model, T, device)
    steppers = {d: Stepper(model, d) for d in DEFENSES}
    x, y = cifar_batch(batch, device)
    times = interleaved_times({d: (lambda s=s: s(x, y)) for d, s in steppers.items()}, args.steps, args.warmup,
                              device)
    entry = {"T": T, "batch": batch, **medians_and_ratios(times, "vanilla")}
    entry["vanilla_cpu_seconds_per_sample_and_time_step"] = entry["cpu_seconds"]["vanilla"] / (T * batch)
    print(entry, flush=True)
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg11")
    parser.add_argument("--time-steps", default="2,4,8,16")
    parser.add_argument("--batch", type=int, default=4, help="batch for the sweep over T")
    parser.add_argument("--batches", default="2,4,8,16", help="batches for the sweep at T = 8")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    args, device = parse_run_args(parser)
    result = {"benchmark": "scaling", "model": args.model, "environment": environment(device),
              "against_T": [measure(args, device, int(T), args.batch) for T in args.time_steps.split(",")],
              "against_batch": [measure(args, device, 8, int(b)) for b in args.batches.split(",")]}
    emit(result, args.out)


if __name__ == "__main__":
    main()
