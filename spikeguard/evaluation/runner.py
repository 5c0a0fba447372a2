"""Run an attack suite against a model: per-sample outcomes, per-attack accuracies and the ensemble.

Outcomes are per-sample scores in [0, 1]: 1 or 0 (classified correctly or not) for a deterministic model,
the fraction of correct draws for a stochastic one. Each attack of the suite runs on every clean-correct
sample, so its accuracy is its own; within an attack the estimators run as a cascade (each attacks only the
samples still standing), so the attack's accuracy is the exact per-sample worst case over its estimators.
The ensemble takes the per-sample minimum over every (attack, estimator) pair.

Event frames [N, T, 2, S, S] go through the same code (frames-linf); the library attacks, which read
images' H and W from the input's shape, see them through a [N, T*2, S, S] view (``FoldedFrames``). Under
events-l0 the suite holds event attacks only, each checked against its event budget.

Randomness is drawn per batch from generators seeded by (seed, batch index, attack index), so a batch's
outcome does not depend on which other batches ran: ``--verify`` and distributed runs reproduce it.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from spikeguard.adapters import has_external_neurons
from spikeguard.attacks import input_gradient
from spikeguard.attacks.ensemble import WorstCase
from spikeguard.attacks.events import within_event_budget
from spikeguard.attacks.registry import TRANSFER, AttackCall, attack_kind, unit_work
from spikeguard.evaluation import bank, batch_dependence
from spikeguard.evaluation.examples import ScoredExamples
from spikeguard.evaluation.saturation import softmax_saturation
from spikeguard.evaluation.stochastic import (
    check_state_carry,
    correct_fraction,
    grad_mode_dependent,
    is_stochastic,
)
from spikeguard.evaluation.suites import AttackSpec, Suite
from spikeguard.evaluation.threat_models import ThreatModel, check_suite, event_budget
from spikeguard.progress import Reporter, reporter_for
from spikeguard.runtime import eval_mode, forked_rng
from spikeguard.schema import SampleOutcome
from spikeguard.snn import is_spiking, spiking_layers

NATIVE = "native"  # the one member of an external model: its own backward pass


@dataclass
class Plan:
    """One evaluation's resolved settings (spikeguard.evaluation.run_evaluation builds it from an EvalConfig
    and a Target): what the runner and every check read."""

    model: nn.Module
    dataset: Any                     # the test split: a sequence of (input, label)
    suite: Suite
    eps: float
    num_classes: int
    n: int | None = None             # the first n samples; None: all
    batch_size: int = 256
    seed: int = 0
    device: torch.device | str = "cpu"
    draws: int | None = None         # EoT draws; None: the suite's for a stochastic model, else 1
    source: nn.Module | None = None  # transfer source
    train: Any = None                # the training split (the escalation's substitute learns on it)
    threat: ThreatModel | None = None  # None: the l-inf attacks on whatever shape the data have
    progress: bool | Reporter = True  # False: silent; True: news on stderr; or a Reporter to share
    examples: ScoredExamples | None = None  # when given: keeps each sample's counted adversarial example
    batch_dependent: bool = False    # the user says outputs that depend on the batch are intended

    @property
    def count(self) -> int:
        return len(self.dataset) if self.n is None else min(self.n, len(self.dataset))


@dataclass
class Batch:
    number: int
    indices: list[int]
    x: torch.Tensor
    y: torch.Tensor


def batch_seed(seed: int, batch: int, slot: int) -> int:
    return (seed * 1_000_003 + batch * 10_007 + slot) % (2**63 - 1)


def make_batches(dataset, n: int, batch_size: int, numbers: Sequence[int] | None, device) -> list[Batch]:
    total = (n + batch_size - 1) // batch_size
    chosen = range(total) if numbers is None else numbers
    out = []
    for b in chosen:
        idx = list(range(b * batch_size, min((b + 1) * batch_size, n)))
        x = torch.stack([dataset[i][0] for i in idx]).to(device)
        y = torch.as_tensor([int(dataset[i][1]) for i in idx]).to(device)
        out.append(Batch(b, idx, x, y))
    return out


class FoldedFrames(nn.Module):
    """Event frames [N, T, C, H, W] seen as images [N, T*C, H, W]: the library attacks (Square, FAB, ...)
    read C, H and W from the input's shape; the model gets its frames back unchanged."""

    def __init__(self, model: nn.Module, frame_shape: torch.Size):
        super().__init__()
        self.model, self.frame_shape = model, tuple(frame_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.reshape(x.shape[0], *self.frame_shape))


def craft(spec: AttackSpec, target: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, draws: int,
          generator: torch.Generator, num_classes: int, threat: ThreatModel | None = None) -> torch.Tensor:
    """Examples of one attack against ``target`` (the model under one estimator), as the attack registry
    says to make them; one draw for a random attack. Event attacks need ``threat`` (events-l0)."""
    kind = attack_kind(spec.attack)
    if kind.library and x.dim() == 5:  # the one place frames become a 4-D view
        folded = craft(spec, FoldedFrames(target, x.shape[1:]), x.flatten(1, 2), y, eps, draws, generator,
                       num_classes, threat)
        return folded.reshape(x.shape)
    budget = frame_range = None
    if "events" in kind.norms:
        budget = event_budget(spec, threat)  # refuses a missing or non-event threat model
        assert threat is not None
        frame_range = threat.frame_range
    call = AttackCall(eps=eps, params=spec.params, norm=spec.norm, draws=draws, generator=generator,
                      num_classes=num_classes, budget=budget, frame_range=frame_range)
    return kind.load()(target, x, y, call)


def within_budget(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Guard on every example any attack returns: inside [0, 1] and the eps ball, or a bug is reported.
    Float rounding of at most 1e-5 is clipped away."""
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    if bool((size > eps + 1e-5).any()) or x_adv.min() < -1e-5 or x_adv.max() > 1 + 1e-5:
        raise RuntimeError(f"an attack left the {norm} ball of radius {eps} or [0, 1]: a bug in the attack")
    if norm == "linf":
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
    return x_adv.clamp(0, 1).detach()


def within_threat(spec: AttackSpec, x_adv: torch.Tensor, x: torch.Tensor, eps: float,
                  threat: ThreatModel | None) -> torch.Tensor:
    """The guard that fits the attack: the event budget for whole-event edits, else the norm ball."""
    if spec.norm == "events":
        budget = event_budget(spec, threat)  # refuses a missing or non-event threat model
        assert threat is not None and threat.frame_range is not None
        return within_event_budget(x_adv, x, budget, threat.frame_range)
    return within_budget(x_adv, x, eps, spec.norm)


class SuiteRunner:
    """Holds what every batch shares; ``run(batch)`` returns one row per sample."""

    def __init__(self, plan: Plan, draws: int):
        check_suite(plan.suite, plan.threat, transfer=plan.source is not None)
        self.plan, self.model, self.suite, self.eps = plan, plan.model, plan.suite, plan.eps
        self.num_classes, self.threat, self.seed, self.source = plan.num_classes, plan.threat, plan.seed, plan.source
        self.draws = draws
        self.seconds: dict[str, float] = {spec.label: 0.0 for spec in self.suite.attacks}
        if self.source is not None:
            self.seconds[TRANSFER] = 0.0
        self.twins: dict = {}  # BPDA wrappers, built once per model
        # A model without spikeguard, SpikingJelly or snnTorch spiking layers (an ANN, also spikeguard's ANN
        # twin trained with --network ann) has its own backward only: one member stands for all, instead of
        # repeating the same attack under every name.
        self.native = is_spiking(self.model) or has_external_neurons(self.model)
        transfer = self.suite.transfer["estimators"]  # the same rule for a transfer source
        self.transfer_members = (tuple(transfer) if self.source is None or is_spiking(self.source)
                                 or has_external_neurons(self.source) else (NATIVE,))
        self.gradient_estimators = tuple(dict.fromkeys(e for s in self.suite.attacks if s.white_box
                                                       for e in self.members(s)))
        self.reporter, self.batch_count = reporter_for(plan.progress), 1

    def units_per_batch(self) -> int:
        """Progress units of one batch: one per (attack, estimator) pair, one per random attack."""
        units = sum(self._units(s) for s in self.suite.attacks)
        return units + (len(self.transfer_members) if self.source is not None else 0)

    def work_per_batch(self) -> float:
        """The units' summed weights (:meth:`unit_work`), which the time-remaining estimate counts."""
        work = sum(self._units(s) * self.unit_work(s) for s in self.suite.attacks)
        return work + (len(self.transfer_members) * self.unit_work(self._transfer_spec())
                       if self.source is not None else 0.0)

    def _units(self, spec: AttackSpec) -> int:
        return 1 if spec.random else max(len(self.members(spec)), 1)

    def unit_work(self, spec: AttackSpec) -> float:
        """One unit of ``spec``: about how many gradient steps per sample it costs."""
        return unit_work(spec.attack, spec.params, self.num_classes)

    def _unit(self, label: str, member: str, batch: Batch) -> None:
        self.reporter.unit(f"{label} / {member} / batch {batch.number + 1} of {self.batch_count}")

    def own_member(self) -> str:
        """The member a check uses where the suite names none: a spikeguard SNN's training estimator (what
        its layers hold), triangle:1 for SpikingJelly / snnTorch neurons, else the model's own gradient."""
        if not self.native:
            return NATIVE
        layers = [layer for layer in spiking_layers(self.model) if layer.spiking]
        return layers[0].estimator.name if layers else "triangle:1"

    def members(self, spec: AttackSpec) -> tuple[str, ...]:
        return spec.estimators if self.native or not spec.estimators else (NATIVE,)

    def score(self, x: torch.Tensor, y: torch.Tensor, keys: Sequence[int] | None = None) -> torch.Tensor:
        """Per-sample scores of inputs ``x``; with ``keys`` (the samples' indices in the data) they count
        towards the evaluation, and the plan's ``examples`` keeps the lowest-scored input per sample."""
        scores = correct_fraction(self.model, x, y, self.draws)
        if keys is not None and self.plan.examples is not None:
            self.plan.examples.offer(keys, x, scores)
        return scores

    def run(self, batch: Batch) -> list[SampleOutcome]:
        x, y = batch.x, batch.y
        with forked_rng(x.device, seed=batch_seed(self.seed, batch.number, 0)):  # stochastic models' own draws
            clean = self.score(x, y, batch.indices)
            rows = [SampleOutcome(i, int(t), float(c)) for i, t, c in zip(batch.indices, y.tolist(), clean.tolist())]
            self._zero_gradients(x, y, rows)
            standing = clean.clone()  # the ensemble so far
            for slot, spec in enumerate(self.suite.attacks, start=1):
                t0 = time.perf_counter()
                generator = torch.Generator().manual_seed(batch_seed(self.seed, batch.number, slot))
                start = standing if spec.params.get("survivors_only") else clean
                worst = self._attack(spec, x, y, start, generator, rows, batch)
                standing = torch.minimum(standing, worst)
                self.seconds[spec.label] += time.perf_counter() - t0
                self.reporter.step_done(f"batch {batch.number + 1} of {self.batch_count}: {spec.label}",
                                        time.perf_counter() - t0)
            if self.source is not None:
                t0 = time.perf_counter()
                generator = torch.Generator().manual_seed(batch_seed(self.seed, batch.number, 999))
                self._transfer(x, y, clean, generator, rows, batch)
                self.seconds[TRANSFER] += time.perf_counter() - t0
        return rows

    def _attack(self, spec: AttackSpec, x, y, clean, generator, rows, batch: Batch | None = None) -> torch.Tensor:
        """Run one attack from the per-sample scores ``clean``; returns its per-sample worst case."""
        eps = self.eps if spec.eps is None else spec.eps
        if spec.random:
            if batch is not None:
                self._unit(spec.label, "random draws", batch)
            drawn = self._random_draws(spec, x, y, eps, clean, generator, rows)
            self.reporter.advance(work=self.unit_work(spec))
            return drawn
        worst = WorstCase(clean)
        everyone = (clean > 0).nonzero().squeeze(1)
        for member in self.members(spec) or ("",):
            # every sample with any correct draw left is attacked (for a deterministic model: every
            # sample still correct); without a cascade, every clean-correct one
            idx = worst.standing() if self.suite.cascade else everyone
            if batch is not None:
                self._unit(spec.label, member or spec.attack, batch)
            scores = clean.clone()
            if idx.numel():
                context = bank.under(self.model, member, self.twins) if member else contextlib.nullcontext(self.model)
                with eval_mode(self.model), context as target:
                    x_adv = craft(spec, target, x[idx], y[idx], eps, self.draws, generator, self.num_classes,
                                  self.threat)
                x_adv = within_threat(spec, x_adv, x[idx], eps, self.threat)
                keys = [rows[i].index for i in idx.tolist()]
                scores[idx] = torch.minimum(clean[idx], self.score(x_adv, y[idx], keys))
            self._member_column(spec.label, member or spec.attack, worst, scores, rows)
            self.reporter.advance(work=self.unit_work(spec))
        return self._attack_columns(spec.label, worst, rows)

    def _member_column(self, label: str, member: str, worst: WorstCase, scores: torch.Tensor,
                       rows: list[SampleOutcome]) -> None:
        """Take one member's scores into the attack's worst case, and write its column: cumulative (the worst
        case over this and the earlier members) in a cascade, its own scores otherwise."""
        worst.update(member, torch.arange(len(rows), device=scores.device), scores)
        for row, value in zip(rows, (worst.score if self.suite.cascade else scores).tolist()):
            row.attack(label).members[member] = value

    @staticmethod
    def _attack_columns(label: str, worst: WorstCase, rows: list[SampleOutcome]) -> torch.Tensor:
        for row, value, member in zip(rows, worst.score.tolist(), worst.by):
            outcome = row.attack(label)
            outcome.score, outcome.broken_by = value, member
        return worst.score

    def _random_draws(self, spec: AttackSpec, x, y, eps, clean, generator, rows) -> torch.Tensor:
        """A random baseline's worst case over its draws (its accuracy) and their mean (in the rows)."""
        draws = []
        for _ in range(spec.params["draws"]):
            x_rand = craft(spec, self.model, x, y, eps, self.draws, generator, self.num_classes, self.threat)
            draws.append(self.score(within_threat(spec, x_rand, x, eps, self.threat), y, [r.index for r in rows]))
        stacked = torch.stack(draws)
        for row, mean in zip(rows, torch.minimum(clean, stacked.mean(0)).tolist()):
            row.attack(spec.label).mean = mean
        worst = WorstCase(clean)
        self._member_column(spec.label, "draws", worst, torch.minimum(clean, stacked.min(0).values), rows)
        return self._attack_columns(spec.label, worst, rows)

    def _transfer_spec(self) -> AttackSpec:
        return AttackSpec(TRANSFER, TRANSFER, {"steps": self.suite.transfer["steps"], "alpha": None,
                                               "restarts": 1, "random_start": True}, ())

    def _transfer(self, x, y, clean, generator, rows, batch: Batch | None = None) -> None:
        """PGD on the source model under each of the suite's transfer estimators, scored on the target."""
        spec = self._transfer_spec()
        assert self.source is not None  # called only with a transfer source
        worst = WorstCase(clean)
        for member in self.transfer_members:
            if batch is not None:
                self._unit(TRANSFER, member, batch)
            with eval_mode(self.source), bank.under(self.source, member, self.twins) as source:
                x_adv = craft(spec, source, x, y, self.eps, 1, generator, self.num_classes)
            scores = torch.minimum(clean, self.score(within_budget(x_adv, x, self.eps, "linf"), y,
                                                     [r.index for r in rows]))
            self._member_column(TRANSFER, member, worst, scores, rows)
            self.reporter.advance(work=self.unit_work(spec))
        self._attack_columns(TRANSFER, worst, rows)

    def grad_mode_members(self, x: torch.Tensor) -> list[str]:
        """The gradient members under which the model's output changes when the input requires a gradient
        (every member of a spikeguard model: pdsg, for one, runs another path then)."""
        found = []
        for member in self.gradient_estimators or (NATIVE,):
            native = member == NATIVE
            with contextlib.nullcontext(self.model) if native else bank.under(self.model, member, self.twins) as target:
                if grad_mode_dependent(target, x, self.seed):
                    found.append(member)
        return found

    def one_sample_failure(self, x: torch.Tensor) -> str | None:
        """Where and why the model cannot score a batch of one sample (the model itself, then under each
        gradient member: the ANN twin's BatchNorm sees no time steps), or None when it can everywhere."""
        for member in ("", *self.gradient_estimators):
            context = bank.under(self.model, member, self.twins) if member else contextlib.nullcontext(self.model)
            try:
                with eval_mode(self.model), context as target, torch.no_grad(), forked_rng(x.device, seed=self.seed):
                    target(x[:1])
            except (RuntimeError, ValueError) as error:
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                return f"{'under ' + member if member else 'scored'}: {first}"
        return None

    def _zero_gradients(self, x, y, rows) -> None:
        """Per sample, the estimators under which the input gradient at the clean point is exactly zero:
        an attack that starts there sees nothing (masked gradients)."""
        zero: list[list[str]] = [[] for _ in rows]
        for member in self.gradient_estimators:
            with eval_mode(self.model), bank.under(self.model, member, self.twins) as target:
                grad, _ = input_gradient(target, x, y, self.draws)
            for i, flat in enumerate((grad.flatten(1) == 0).all(1).tolist()):
                if flat:
                    zero[i].append(member)
        for row, names in zip(rows, zero):
            row.zero_gradient = names


def probe_batch(plan: Plan) -> torch.Tensor:
    """The first (up to) 32 samples: what the probes of stochastic.py look at."""
    return torch.stack([plan.dataset[i][0] for i in range(min(plan.count, 32))]).to(torch.device(plan.device))


def probe_labels(plan: Plan) -> torch.Tensor:
    """The labels of ``probe_batch``'s samples."""
    return torch.as_tensor([int(plan.dataset[i][1]) for i in range(min(plan.count, 32))],
                           device=torch.device(plan.device))


def detect_draws(plan: Plan, probe: torch.Tensor) -> tuple[bool, int]:
    """(whether the model is stochastic, the EoT draws to use): the plan's draws, else the suite's when
    calls on the same input differ, else 1. A model whose state carries between calls is refused first."""
    with forked_rng(plan.device, seed=plan.seed):
        check_state_carry(plan.model, probe, plan.seed)
        stochastic = is_stochastic(plan.model, probe)
    return stochastic, plan.draws if plan.draws is not None else (plan.suite.eot_draws if stochastic else 1)


def run_suite(plan: Plan, batches: Sequence[int] | None = None,
              on_batch: Callable[[int, list[SampleOutcome], dict[str, float]], None] | None = None,
              ) -> tuple[list[SampleOutcome], dict]:
    """Rows of per-sample outcomes for the chosen batches (all by default), and run facts: whether the
    model is stochastic, the draws used, and seconds per attack. ``on_batch(number, rows, seconds)`` is
    called as each batch finishes (seconds: per attack, of that batch)."""
    device = torch.device(plan.device)
    plan.model = plan.model.to(device)
    if plan.source is not None:
        plan.source = plan.source.to(device)
    probe = probe_batch(plan)
    # before the probes that score the probe batch alone: it may hold a single sample
    batch_probe = batch_dependence.check(plan.model, probe, plan.seed, plan.batch_dependent)
    stochastic, used = detect_draws(plan, probe)
    runner = SuiteRunner(plan, used)
    if batch_probe["batch_dependent"]:  # intended (else refused above): the attacks score single samples too
        batch_dependence.check_one_sample(batch_probe, runner.one_sample_failure(probe))
    grad_mode = runner.grad_mode_members(probe)
    rows: list[SampleOutcome] = []
    chosen = make_batches(plan.dataset, plan.count, plan.batch_size, batches, device)
    runner.batch_count = math.ceil(plan.count / plan.batch_size)
    radius = f"budget {plan.threat.budget}" if plan.threat is not None and plan.threat.events else f"eps {plan.eps:.4g}"
    runner.reporter.begin(f"suite {plan.suite.name}, {radius}, {plan.count} samples", runner.units_per_batch() *
                          len(chosen), runner.work_per_batch() * len(chosen))
    try:
        for batch in chosen:
            before = dict(runner.seconds)
            batch_rows = runner.run(batch)
            rows.extend(batch_rows)
            if on_batch is not None:
                on_batch(batch.number, batch_rows, {k: v - before[k] for k, v in runner.seconds.items()})
    finally:
        runner.reporter.end()
    facts = {"n": plan.count, "stochastic": stochastic, "draws": used, "seconds": runner.seconds,
             "grad_mode_dependent": grad_mode, "batch_dependence": batch_probe,
             "saturation": softmax_saturation(plan.model, probe, probe_labels(plan), plan.seed),
             "gradient_estimators": list(runner.gradient_estimators)}
    return rows, facts
