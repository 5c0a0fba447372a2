"""The probes an evaluation runs on the model besides its attacks, into results.json's "probes" and flags.

Each probe lives in its own module and says there what it measures and why:
* agreement.py: does a step along the model's own gradient move its output the way the gradient says;
Probes that refuse a model outright (state carried between calls, non-finite logits) are in stochastic.py.
"""

from __future__ import annotations

import contextlib
import time

import torch

from spikeguard.evaluation import bank
from spikeguard.evaluation.agreement import PROBE_SAMPLES, agreement_flag, probe_agreement
from spikeguard.evaluation.runner import NATIVE, Plan, SuiteRunner, make_batches
from spikeguard.runtime import forked_rng
from spikeguard.schema import Flag, Probes


def agreement_step(plan: Plan, runner: SuiteRunner, probes: Probes) -> list[Flag]:
    """The agreement probe on the first clean-correct samples (up to PROBE_SAMPLES) under the suite's gradient
    members in order (the model's own backward for a model without spiking layers spikeguard drives); its
    result into ``probes``, its flag returned. Skipped (None) when the suite has no white-box attack, and under
    events-l0."""
    members = runner.gradient_estimators
    if not members or (plan.threat is not None and plan.threat.events):  # events-l0: no eps ball to step in
        return []
    start = time.perf_counter()
    count = min(plan.count, PROBE_SAMPLES)
    (batch,) = make_batches(plan.dataset, count, count, [0], torch.device(plan.device))

    def under(member: str):
        if member == NATIVE:
            return contextlib.nullcontext(runner.model)
        return bank.under(runner.model, member, runner.twins)

    with forked_rng(plan.device, seed=plan.seed):  # a random model's draws: reproducible, the caller's RNG untouched
        result = probe_agreement(runner.model, batch.x, batch.y, plan.eps, members, under, runner.draws, plan.seed)
    probes.agreement = {**result, "seconds": round(time.perf_counter() - start, 3)}
    return agreement_flag(result)
