"""Training step time, peak memory and the spiking layers' share of the step, per defense and model.

For each model (VGG-11, WRN-16-4 at T = 8 by default) every defense (vanilla, sr, sr_star, at_pgd7, rat,
gr) is timed on one shared model, one step of each in turn, median over the timed rounds; then each
defense's peak memory is measured over one more step, and the neuron share over one hooked step (which
is slower than an unhooked one; its share is the figure). The last output line is one JSON object.

  python benchmarks/train_step.py                          # CPU, batch 8, both models, all defenses
  python benchmarks/train_step.py --device cuda --batch 64 --bf16 --compile neurons
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

import torch
from common import (
    DEFENSES,
    THREADS_HELP,
    Stepper,
    cifar_batch,
    emit,
    environment,
    interleaved_times,
    medians_and_ratios,
    neuron_share,
    peak_memory,
    pick,
    prepared,
    set_threads,
)

from spikeguard.errors import UserError
from spikeguard.speed import SpeedOptions


def _allowed(options: SpeedOptions, defense: str) -> bool:
    """Whether SpeedOptions.check accepts the options for this defense."""
    try:
        options.check(defense=defense)
    except UserError:
        return False
    return True


def bench_model(name: str, args, device: torch.device, options: SpeedOptions) -> dict:
    model, forward = prepared(name, args.time_steps, device, options)
    defenses = [d for d in args.defenses if _allowed(options, d)]
    steppers = {d: Stepper(model, d, options, forward) for d in defenses}
    x, y = cifar_batch(args.batch, device)
    start = time.perf_counter()
    times = interleaved_times({d: (lambda s=s: s(x, y)) for d, s in steppers.items()}, args.steps, args.warmup, device)
    result = {**medians_and_ratios(times, "vanilla"), "all_seconds": times,
              "skipped": sorted(set(args.defenses) - set(defenses))}
    seconds = result["wall_seconds"]
    result["peak_memory_mb"] = {}
    for d, s in steppers.items():
        with peak_memory(device) as mem:
            s(x, y)
        result["peak_memory_mb"][d] = mem["peak_mb"]
    result["peak_memory_measures"] = mem["measures"]
    if args.neuron_share:
        result["neuron_share"] = {d: neuron_share(lambda s=steppers[d]: s(x, y), model, device, args.share_repeats)
                                  for d in args.neuron_share if d in steppers}
    result["benchmark_seconds"] = time.perf_counter() - start
    print(name, "wall", {k: round(v, 3) for k, v in seconds.items()}, "cpu",
          {k: round(v, 3) for k, v in result["cpu_seconds"].items()}, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vgg11,wrn16_4")
    parser.add_argument("--defenses", default=",".join(DEFENSES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--time-steps", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed rounds (one step of each defense per round)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help=THREADS_HELP)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--tf32", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", default="none", choices=("none", "model", "neurons"))
    parser.add_argument("--neuron-share", default="vanilla,sr", help="defenses whose neuron share to profile ('' for none)")
    parser.add_argument("--share-repeats", type=int, default=1)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    args.defenses = [d for d in args.defenses.split(",") if d]
    args.neuron_share = [d for d in args.neuron_share.split(",") if d]
    unknown = set(args.defenses) - set(DEFENSES)
    if unknown:
        parser.error(f"unknown defenses {sorted(unknown)}")
    device = pick(args.device)
    set_threads(args.threads)
    options = SpeedOptions(bf16=args.bf16, channels_last=args.channels_last, compile=args.compile, tf32=args.tf32)
    result = {"benchmark": "train_step", "T": args.time_steps, "batch": args.batch, "rounds": args.steps,
              "options": asdict(options),
              "defense_settings": {d: DEFENSES[d] for d in args.defenses}, "environment": environment(device),
              "models": {}}
    for name in args.models.split(","):
        result["models"][name] = bench_model(name, args, device, options)
    emit(result, args.out)


if __name__ == "__main__":
    main()
