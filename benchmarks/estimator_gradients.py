"""Estimator gradients on an accelerator equal those on the CPU (the estimator tests, run across devices).

For every backward estimator family (default widths), a small spiking CNN in float64 (random weights,
BatchNorm in training mode, T = 4) runs forward and backward on the CPU and on ``--device``: the logits,
the input gradient and every parameter gradient must agree to ``--rtol`` (float64 kernels differ only in
summation order), and each surrogate's derivative on a grid must match on both devices. With
``--device cpu`` the script runs everything against itself: a dry run of the script, not of a GPU.
Exit code 1 if any check fails. The last output line is one JSON object.

  python benchmarks/estimator_gradients.py --device cuda
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from common import emit, environment, pick

from spikeguard.models import ModelSpec, create_model
from spikeguard.snn import ESTIMATOR_FAMILIES, parse_estimator, set_estimator, spike


def model_grads(family: str, device: torch.device) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = create_model(ModelSpec("digits_cnn", 10, 1, 8, (0.3,), (0.4,), time_steps=4)).double().to(device).train()
    set_estimator(model, family)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 1, 8, 8, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    y = torch.randint(0, 10, (16,), generator=g).to(device)
    logits = model(x)
    params = list(model.parameters())
    grads = torch.autograd.grad(F.cross_entropy(logits, y), [x, *params])
    return {"logits": logits.detach().cpu(), "input_grad": grads[0].cpu(),
            **{f"param{i}": gi.cpu() for i, gi in enumerate(grads[1:])}}


def surrogate_grad(family: str, device: torch.device) -> torch.Tensor | None:
    if parse_estimator(family).kind != "surrogate":  # defined on the whole layer, covered by model_grads
        return None
    v = torch.linspace(-3, 3, 601, dtype=torch.float64, device=device).requires_grad_(True)
    (grad,) = torch.autograd.grad(spike(v, parse_estimator(family)).sum(), v)
    return grad.cpu()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rtol", type=float, default=1e-9)
    parser.add_argument("--out")
    args = parser.parse_args()
    device = pick(args.device)
    cpu = torch.device("cpu")
    result = {"benchmark": "estimator_gradients", "environment": environment(device),
              "dry_run": device.type == "cpu", "families": {}}
    failed = []
    for family in ESTIMATOR_FAMILIES:
        ref, got = model_grads(family, cpu), model_grads(family, device)
        worst = max(((got[k] - ref[k]).abs().max() / ref[k].abs().max().clamp(min=1e-30)).item() for k in ref)
        entry = {"max_relative_diff": worst, "input_grad_nonzero": bool(ref["input_grad"].abs().sum() > 0)}
        s_ref, s_got = surrogate_grad(family, cpu), surrogate_grad(family, device)
        if s_ref is not None:
            entry["surrogate_max_abs_diff"] = (s_got - s_ref).abs().max().item()
        ok = worst < args.rtol and entry["input_grad_nonzero"] and entry.get("surrogate_max_abs_diff", 0.0) < args.rtol
        entry["ok"] = ok
        result["families"][family] = entry
        if not ok:
            failed.append(family)
        print(family, "ok" if ok else "FAILED", f"max relative diff {worst:.2e}", flush=True)
    result["failed"] = failed
    emit(result, args.out)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
