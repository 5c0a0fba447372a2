"""Spiking-layer forward + backward throughput, eager against torch.compile (inductor), per estimator.

The input is one VGG-11 first-layer current, [T * N, 64, 32, 32]. Each variant runs forward and backward
(upstream gradient of ones); the compiled neuron's spikes must equal the eager ones and its input gradient
must agree to float32 rounding, both recorded. The last output line is one JSON object.

  python benchmarks/neuron_throughput.py [--batch 8] [--time-steps 8] [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import (
    emit,
    environment,
    interleaved_medians,
    parse_run_args,
    synchronize,
)

from spikeguard.snn import IFNeuron


def run(neuron, x):
    x.grad = None
    out = neuron(x)
    out.backward(torch.ones_like(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--time-steps", type=int, default=8)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--estimators", default="triangle:1,sigmoid:4,bptr,hart")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args, device = parse_run_args(parser)
    T = args.time_steps
    g = torch.Generator().manual_seed(0)
    # currents around the threshold, as after BatchNorm: some steps fire, some do not
    x = (torch.randn(T * args.batch, args.channels, args.size, args.size, generator=g) * 0.7 + 0.6).to(device)
    x.requires_grad_(True)
    result = {"benchmark": "neuron_throughput", "shape": list(x.shape), "environment": environment(device),
              "estimators": {}}
    for name in args.estimators.split(","):
        torch._dynamo.reset()
        eager = IFNeuron(time_steps=T, estimator=name).to(device)
        compiled = IFNeuron(time_steps=T, estimator=name).to(device)
        compiled.compile()
        start = time.perf_counter()
        out_c = run(compiled, x).detach()
        grad_c = x.grad.clone()
        synchronize(device)
        compile_seconds = time.perf_counter() - start
        out_e = run(eager, x).detach()
        grad_e = x.grad.clone()
        seconds = interleaved_medians({"eager": lambda e=eager: run(e, x), "compiled": lambda c=compiled: run(c, x)},
                                      args.steps, args.warmup, device)
        entry = {
            "seconds": seconds,
            "speedup": seconds["eager"] / seconds["compiled"],
            "elements_per_second": {k: x.numel() / v for k, v in seconds.items()},
            "first_call_with_compile_seconds": compile_seconds,
            "spikes_equal": bool(torch.equal(out_c, out_e)),
            "grad_max_abs_diff": (grad_c - grad_e).abs().max().item(),
            "grad_max_abs": grad_e.abs().max().item(),
            "spike_rate": out_e.mean().item(),
        }
        result["estimators"][name] = entry
        print(name, {k: round(v, 4) for k, v in seconds.items()}, f"speedup {entry['speedup']:.2f}x",
              f"spikes equal {entry['spikes_equal']}", flush=True)
    emit(result, args.out)


if __name__ == "__main__":
    main()
