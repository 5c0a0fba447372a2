"""How far reduced precision moves each defense's loss, penalty and parameter gradient from IEEE float32.

Modes: bf16 (spikeguard.speed's autocast with float32 ends and membranes) everywhere, and tf32 on CUDA;
and, as yardsticks, "jitter_1e-5" and "jitter_1e-3": float32 with that much added to every pixel (one
8-bit grey level is 0.0039), i.e. how far the model's own gradient moves when a few spikes flip. At random
initialisation a deep SNN's per-batch gradient is that sensitive: on VGG-11, 1e-5 already took its cosine
to float32's down to about 0.26. Each defense's objective is computed on copies of one model and batch in every mode;
reported are the relative change of the loss and of the penalty, and the cosine between the parameter
gradients, per batch. This is a measurement, not a test: it says which defenses a precision mode is fit for (speed.py
refuses bf16 for SR on this evidence). The last output line is one JSON object.

  python benchmarks/precision.py --device cuda [--model vgg11] [--batch 32]
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from common import (
    DEFENSES,
    cifar_batch,
    cifar_model,
    emit,
    environment,
    parse_run_args,
)

from spikeguard.defenses import create_defense
from spikeguard.speed import SpeedOptions, autocast, configure_backends, prepare_model


def objective(model, defense: str, x, y, options: SpeedOptions, device):
    configure_backends(options)
    model = copy.deepcopy(model)
    prepare_model(model, options)
    with autocast(device, options.bf16):
        loss, parts = create_defense(**DEFENSES[defense]).loss(model, x, y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    flat = torch.cat([g.double().flatten() for g in grads])  # float64: a float32 cosine of 1e7 terms drifts
    return loss.item(), parts.get("penalty", loss).item(), flat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg11")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--time-steps", type=int, default=8)
    parser.add_argument("--defenses", default="vanilla,sr,at_pgd7,gr")
    args, device = parse_run_args(parser)
    modes = {"jitter_1e-5": SpeedOptions(), "jitter_1e-3": SpeedOptions(), "bf16": SpeedOptions(bf16=True)}
    if device.type == "cuda":
        modes["tf32"] = SpeedOptions(tf32=True)
    model = cifar_model(args.model, args.time_steps, device)
    result = {"benchmark": "precision", "model": args.model, "batch": args.batch, "T": args.time_steps,
              "environment": environment(device), "reference": "IEEE float32", "defenses": {}}
    for defense in args.defenses.split(","):
        entry = {m: {"loss_rel_diff": [], "penalty_rel_diff": [], "grad_cosine": []} for m in modes}
        for b in range(args.batches):
            x, y = cifar_batch(args.batch, device, seed=b)
            l0, p0, g0 = objective(model, defense, x, y, SpeedOptions(), device)
            for mode, options in modes.items():
                shift = float(mode.split("_")[1]) if mode.startswith("jitter") else 0.0
                l1, p1, g1 = objective(model, defense, x + shift, y, options, device)
                entry[mode]["loss_rel_diff"].append(abs(l1 - l0) / abs(l0))
                entry[mode]["penalty_rel_diff"].append(abs(p1 - p0) / max(abs(p0), 1e-12))
                entry[mode]["grad_cosine"].append(F.cosine_similarity(g0, g1, dim=0).item())
        result["defenses"][defense] = entry
        print(defense, {m: {k: [round(v, 3) for v in vs] for k, vs in e.items()} for m, e in entry.items()},
              flush=True)
    configure_backends(SpeedOptions())
    emit(result, args.out)


if __name__ == "__main__":
    main()
