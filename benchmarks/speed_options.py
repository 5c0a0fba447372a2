"""The one-device speed options against plain float32, timed in one run: channels_last, torch.compile of
the spiking layers, of the whole model, and bf16, each on its own copy of one model, for vanilla and SR
(bf16 is refused for SR, so it is timed for vanilla only). Variants are timed in turn, round by round.
Compilation happens in the warm-up round and is reported separately. The last output line is one JSON
object with each variant's seconds per step and its speed-up over float32 eager.

  python benchmarks/speed_options.py [--model vgg11] [--batch 8] [--device cuda]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

from common import (
    Stepper,
    cifar_batch,
    cifar_model,
    emit,
    environment,
    interleaved_times,
    parse_run_args,
    synchronize,
)

from spikeguard.errors import UserError
from spikeguard.speed import SpeedOptions, configure_backends, prepare_model

VARIANTS = {
    "float32": SpeedOptions(),
    "channels_last": SpeedOptions(channels_last=True),
    "compile_neurons": SpeedOptions(compile="neurons"),
    "compile_model": SpeedOptions(compile="model"),
    "bf16": SpeedOptions(bf16=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg11")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--time-steps", type=int, default=8)
    parser.add_argument("--defenses", default="vanilla,sr")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=3)
    args, device = parse_run_args(parser)
    configure_backends(SpeedOptions())
    base = cifar_model(args.model, args.time_steps, device)
    x, y = cifar_batch(args.batch, device)
    steppers, compile_seconds = {}, {}
    for defense in args.defenses.split(","):
        for name in args.variants.split(","):
            options = VARIANTS[name]
            try:
                options.check(device, defense)
            except UserError as refused:  # e.g. bf16 with SR: not timed
                print(f"{defense}/{name}: skipped ({refused})", flush=True)
                continue
            model = copy.deepcopy(base)
            stepper = Stepper(model, defense, options, prepare_model(model, options))
            synchronize(device)
            start = time.perf_counter()
            stepper(x, y)  # compiles, for the compile variants
            synchronize(device)
            compile_seconds[f"{defense}/{name}"] = time.perf_counter() - start
            steppers[f"{defense}/{name}"] = stepper
            print(f"{defense}/{name}: first step {compile_seconds[f'{defense}/{name}']:.1f} s", flush=True)
    times = interleaved_times({k: (lambda s=s: s(x, y)) for k, s in steppers.items()}, args.steps, 1, device)
    result = {"benchmark": "speed_options", "model": args.model, "batch": args.batch, "T": args.time_steps,
              "environment": environment(device), "first_step_seconds": compile_seconds, "all_seconds": times}
    for kind, series in times.items():
        med = {k: statistics.median(v) for k, v in series.items()}
        result[f"{kind}_seconds"] = med
        result[f"{kind}_speedup_over_float32"] = {k: med[f"{k.split('/')[0]}/float32"] / v for k, v in med.items()
                                                  if f"{k.split('/')[0]}/float32" in med}
        print(kind, {k: round(v, 2) for k, v in result[f"{kind}_speedup_over_float32"].items()}, flush=True)
    emit(result, args.out)


if __name__ == "__main__":
    main()
