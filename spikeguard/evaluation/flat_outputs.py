"""The flat-outputs probe: logits that do not move under small random perturbations while the decision holds.

A model that answers with hard labels (a constant times a one-hot), a softmax saturated to exact 0 and 1, or
scores rounded to a few levels keeps its decisions but gives a score-based attack (Square, NES) nothing to
climb, and a gradient through such an output may say anything. On the probe batch (the first PROBE_SAMPLES
samples) every sample gets DRAWS uniform random perturbations at each radius of RADII (fractions of eps:
eps / 2, where an honest model's outputs move); it is flat when, under every draw at every
radius, its decision holds and no logit moves by more than RELATIVE_CHANGE of its largest logit. Above
THRESHOLD flat samples, the flag ``flat_outputs`` (one of the flags that start the escalation, whose
decision-based attack reads only decisions).

Not flagged: outputs identical on every probed sample (``constant_outputs``; an untrained SNN whose neurons
never fire): nothing depends on the input, so there is no boundary to hide and every attack scores it right.

An honest SNN is piecewise constant too (spike counts change in steps), which is why the radius is eps / 2
and not tiny: at eps / 2 its outputs move on almost every sample (benchmarks/results/cpu_flat_outputs.json).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from spikeguard.runtime import eval_mode, forked_rng
from spikeguard.schema import EvalRecord, Flag, FlagName, Probes

if TYPE_CHECKING:
    from spikeguard.evaluation.runner import Plan
    from spikeguard.evaluation.threat_models import ThreatModel

PROBE_SAMPLES = 64
DRAWS = 32
# fractions of eps; a tiny radius adds nothing (honest SNNs are flat there too, and a sample flat under every
# draw at eps / 2 stays so at smaller radii), so it is not paid for
RADII = (0.5,)
RELATIVE_CHANGE = 1e-5      # a logit change below this fraction of the largest logit counts as none
QUANTISED = 0.05            # distinct logit values below this fraction of all values probed: quantised scores
# Measured on 200 digits test samples at eps 0.15 (benchmarks/results/cpu_flat_outputs.json, 2-core Xeon):
# honest models are flat on 0% (tiny test SNN, the demo's vanilla SNN, a ReLU CNN), 3% (the snnTorch
# tutorial CSNN) and 11.5% (the SpikingJelly one; both output spike counts, whole numbers that a small
# perturbation often leaves unchanged); the flat-output traps on 97% (hard labels) and more than half
# (a softmax rounded to quarters). About twice the highest honest fraction:
THRESHOLD = 0.25


def probe_flat_outputs(model: nn.Module, x: torch.Tensor, eps: float, seed: int, draws: int = DRAWS) -> dict:
    """The probe's report on inputs ``x`` (results.json's ``probes.flat_outputs``). A stochastic model is
    called under the same seed every time, so that its own randomness does not count as movement."""
    generator = torch.Generator().manual_seed(seed)
    scale = eps if eps > 0 else 8 / 255  # a clean-only run still asks whether the outputs are flat

    def logits(inputs: torch.Tensor) -> torch.Tensor:
        with forked_rng(inputs.device, seed=seed):
            return model(inputs).detach().float()

    with torch.no_grad(), eval_mode(model):
        clean = logits(x)
        flat = torch.ones(len(x), dtype=torch.bool, device=x.device)
        per_radius, seen = {}, [clean]
        for fraction in RADII:
            radius = fraction * scale
            still = torch.ones_like(flat)
            for _ in range(draws):
                noise = (2 * torch.rand(x.shape, generator=generator) - 1).to(x.device, x.dtype) * radius
                moved = logits((x + noise).clamp(0, 1))
                seen.append(moved)
                change = (moved - clean).abs().amax(1) / clean.abs().amax(1).clamp(min=1e-12)
                still &= (moved.argmax(1) == clean.argmax(1)) & (change < RELATIVE_CHANGE)
            per_radius[f"{radius:.6g}"] = still.float().mean().item()
            flat &= still
    values = torch.cat(seen)
    distinct = torch.unique(values).numel() / values.numel()
    return {"samples": len(x), "draws": draws, "radii": [round(f * scale, 8) for f in RADII],
            "flat_fraction": flat.float().mean().item(), "flat_fraction_per_radius": per_radius,
            "saturated_softmax_fraction": (torch.softmax(clean, 1).amax(1) == 1.0).float().mean().item(),
            "distinct_logit_fraction": distinct, "quantised": distinct < QUANTISED,
            "constant_outputs": bool((clean == clean[:1]).all()), "threshold": THRESHOLD}


def flat_flag(report: dict | None) -> list[Flag]:
    """``flat_outputs`` when more than THRESHOLD of the probed samples are flat, unless the outputs are the
    same on every probed sample: a model whose output does not depend on its input (an untrained SNN whose
    neurons never fire) has no decision boundary for flat scores to hide, and every attack scores it right."""
    if report is None or report["flat_fraction"] <= THRESHOLD or report["constant_outputs"]:
        return []
    kind = ("quantised scores" if report["quantised"] else
            "a softmax saturated to exact 0 and 1" if report["saturated_softmax_fraction"] > 0.5 else
            "hard labels or saturated scores")
    return [Flag(FlagName.FLAT_OUTPUTS,
                 f"{report['flat_fraction']:.0%} of {report['samples']} probed samples keep exactly the same logits "
                 f"under {report['draws']} random perturbations of radius {report['radii'][0]:.4g} ({kind}): "
                 "score-based attacks (Square, NES) have nothing to climb and the gradient of such an output "
                 "cannot be trusted; a decision-based attack (rays) reads only the decisions")]


def flat_outputs_step(record: EvalRecord, plan: Plan, threat: ThreatModel | None) -> list[Flag]:
    """The probe on the plan's first PROBE_SAMPLES samples into ``record.probes.flat_outputs``; its flag.
    Under events-l0 (whole-event edits, no l-inf ball) it does not run."""
    if threat is not None and threat.events:
        return []
    count = min(plan.count, PROBE_SAMPLES)
    x = torch.stack([plan.dataset[i][0] for i in range(count)]).to(torch.device(plan.device))
    report = probe_flat_outputs(plan.model, x, plan.eps, plan.seed)
    record.probes = record.probes or Probes()
    record.probes.flat_outputs = report
    return flat_flag(report)
