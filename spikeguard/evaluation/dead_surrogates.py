"""The dead-surrogate probe: per gradient member, the per-layer fraction of exactly-zero surrogate derivatives
on the probe batch (spikeguard/snn/dead_zone.py), beside the fraction of clean-correct samples whose input
gradient is exactly zero (the gradient check's, not measured again), and its flag.

Layer-level zeros are normal: a compact-support surrogate is zero wherever the membrane is farther from the
threshold than its width, about half of an honest digits SNN's first layer. The flag fires only when a
member's INPUT gradient is exactly zero on most clean-correct samples: that member sees nothing there.
"""

from __future__ import annotations

from torch import nn

from spikeguard.adapters import external_neurons, not_applicable
from spikeguard.evaluation import bank
from spikeguard.evaluation.runner import Plan, probe_batch
from spikeguard.runtime import forked_rng
from spikeguard.schema import EvalRecord, Flag, FlagName, Probes
from spikeguard.snn.dead_zone import dead_fractions, spiking_modules

MOST = 0.5  # a member whose input gradient is zero on more than this fraction of clean-correct samples flags
DEAD_LAYER = 0.95  # a layer with at least this fraction of exactly-zero derivatives is "dead"
SCALE_FREE = "threshold_triangle:1"  # the member whose width follows each layer's threshold (bank.QUICK, BANK)


ANN_WHY = "BPDA through the ANN twin: no surrogate (the twin's ReLU gradient)"


def probe(plan: Plan, members) -> dict | None:
    """``measure`` on the plan's probe batch (its first 32 samples), a stochastic model's draws seeded by the
    plan's seed (the caller's random state untouched)."""
    with forked_rng(plan.device, seed=plan.seed):
        return measure(plan.model, probe_batch(plan), members)


def measure(model: nn.Module, probe, members) -> dict | None:
    """{"samples": n, "members": {member: {"layers": {name: zero fraction}, "unmeasured": {name: why}}}} on
    the batch ``probe``; None for a model without spiking layers (no surrogate to measure). One forward and
    backward pass per member (``ann`` has no surrogate: its layers are listed as unmeasured)."""
    layers = spiking_modules(model)
    if not layers:
        return None
    out = {}
    for member in (m for m in members if m != "native"):
        if member == bank.ANN:
            out[member] = {"layers": {}, "unmeasured": {name: ANN_WHY for name in layers}}
            continue
        reasons = {n.name: why for n in external_neurons(model) if (why := not_applicable(n, member))}
        with bank.under(model, member) as target:
            out[member] = dead_fractions(model, probe, target, reasons)
    return {"samples": int(probe.shape[0]), "members": out}


def step(record: EvalRecord, measured: dict | None) -> list[Flag]:
    """The probe's results into ``record.probes.dead_surrogates`` (each member's input-gradient zero fraction
    taken from ``record.gradient_check``); the dead_surrogate flag when a member's is above MOST. Nothing for
    a model without spiking layers (``measured`` None): it has no surrogate."""
    if measured is None:
        return []
    zero = dict(record.gradient_check.zero_gradient_fraction) if record.gradient_check else {}
    members = {m: dict(v) for m, v in measured["members"].items()}
    for member, fraction in zero.items():
        members.setdefault(member, {"layers": {}, "unmeasured": {}})["input_gradient_zero"] = fraction
    record.probes = record.probes or Probes()
    record.probes.dead_surrogates = {**measured, "members": members, "most": MOST}
    return dead_flag(zero, members)


def dead_flag(zero: dict[str, float], members: dict[str, dict]) -> list[Flag]:
    """dead_surrogate for the members whose input gradient is zero on more than MOST of the clean-correct
    samples (not untrusting by itself: the other members may still see the gradient). The cause named is
    the surrogate's support where a layer of the member is (almost) all zeros (DEAD_LAYER), else a zero
    after the spiking layers (e.g. a saturated softmax)."""
    dead = {m: f for m, f in zero.items() if f > MOST}
    if not dead:
        return []
    named = ", ".join(f"{m} ({f:.0%})" for m, f in dead.items())
    alive = [m for m, f in zero.items() if f <= MOST]
    worst = {m: max(members.get(m, {}).get("layers", {}).values(), default=None) for m in dead}
    support = [m for m, w in worst.items() if w is not None and w >= DEAD_LAYER]
    other = [m for m in dead if m not in support]
    causes = []
    if support:
        causes.append(f"under {', '.join(support)} a spiking layer's surrogate derivatives are (almost) all "
                      "exactly zero: the membranes lie farther from the threshold than the surrogate's width (likely "
                      "thresholds and membranes far outside its support: large thresholds, or the currents feeding "
                      f"them scaled up, e.g. by folded BatchNorm); the scale-free member {SCALE_FREE} (width x "
                      "each layer's threshold) does not depend on that scale")
    if other:
        causes.append(f"under {', '.join(other)} no spiking layer is dead, so the zero arises elsewhere (e.g. a "
                      "saturated softmax: the margin loss does not saturate)")
    return [Flag(FlagName.DEAD_SURROGATE,
                 f"the input gradient is exactly zero on most clean-correct samples under {named}; "
                 + "; ".join(causes) + (f"; members that still see a gradient: {', '.join(alive)}" if alive else "")
                 + "; per-layer fractions in probes.dead_surrogates")]
