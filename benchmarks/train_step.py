"""Time one training step of spiking VGG-11 (T = 8, batch 16, CPU) for several defenses, in one run.

Prints one line per defense, then as its last line one JSON object with seconds per step (median over
the timed steps, after warm-up) and each defense's ratio to vanilla. Ratios, not seconds, are the claim:
they are comparable across machines. Run: python benchmarks/train_step.py [--steps 3] [--warmup 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from spikeguard.defenses import create_defense
from spikeguard.models import ModelSpec, create_model

DEFENSES = {
    "vanilla": dict(name="vanilla"),
    "sr": dict(name="sr", lamb=0.002),
    "sr_star": dict(name="sr_star", lamb=0.002, attack="pgd", steps=7, alpha=2.55 / 255),  # SR on PGD-7 examples
    "sr_star_fgsm": dict(name="sr_star", lamb=0.002, attack="fgsm"),                       # SR on FGSM examples
    "at_pgd7": dict(name="at", attack="pgd", steps=7, alpha=2.55 / 255),
}


def time_steps(defense_kw: dict, batch: int, T: int, steps: int, warmup: int, seed: int = 0) -> float:
    torch.manual_seed(seed)
    spec = ModelSpec("vgg11", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), time_steps=T)
    model = create_model(spec).train()
    defense = create_defense(**defense_kw)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(seed)
    x, y = torch.rand(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss, _ = defense.loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        defense.after_step(model)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--time-steps", type=int, default=8)
    args = parser.parse_args()
    seconds = {}
    for name, kw in DEFENSES.items():
        seconds[name] = time_steps(kw, args.batch, args.time_steps, args.steps, args.warmup)
        print(f"{name}: {seconds[name]:.3f} s/step", flush=True)
    ratios = {name: seconds[name] / seconds["vanilla"] for name in DEFENSES if name != "vanilla"}
    print(json.dumps({"model": "vgg11", "T": args.time_steps, "batch": args.batch, "threads": torch.get_num_threads(),
                      "seconds_per_step": seconds, "ratio_to_vanilla": ratios}))


if __name__ == "__main__":
    main()
