"""The probes an evaluation runs on the model besides its attacks, into results.json's "probes" and flags.

Each probe lives in its own module and says there what it measures and why. Before the suite (runner.py's
run_suite, on the first 32 samples): batch_dependence.py (outputs that depend on the other samples of a batch:
refused unless intended), stochastic.py (state carried between calls: refused; randomness: EoT; grad-mode
dependence; non-finite logits) and saturation.py (a softmax saturated to exact 0 and 1). After the suite, here
(``after_suite``): agreement.py (does a step along the model's own gradient move its output the way the
gradient says), dead_surrogates.py (exactly-zero surrogate derivatives per member and layer) and
flat_outputs.py (logits that do not move under small random perturbations).
"""

from __future__ import annotations

import contextlib
import time

import torch

from spikeguard.evaluation import bank, dead_surrogates
from spikeguard.evaluation.agreement import PROBE_SAMPLES, agreement_flag, probe_agreement
from spikeguard.evaluation.flat_outputs import flat_outputs_step
from spikeguard.evaluation.runner import NATIVE, Plan, SuiteRunner, make_batches
from spikeguard.evaluation.threat_models import ThreatModel
from spikeguard.runtime import forked_rng
from spikeguard.schema import EvalRecord, Flag, Probes


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


def after_suite(record: EvalRecord, plan: Plan, runner: SuiteRunner, threat: ThreatModel | None) -> list[Flag]:
    """The probes that run once the suite has (agreement, dead surrogates, flat outputs): their results into
    ``record.probes``, their flags returned."""
    record.probes = record.probes or Probes()
    found = agreement_step(plan, runner, record.probes)
    found += dead_surrogates.step(record, dead_surrogates.probe(plan, runner.gradient_estimators))
    found += flat_outputs_step(record, plan, threat)
    return found
