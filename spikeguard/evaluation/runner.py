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
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from spikeguard.attacks import fgsm, input_gradient, pgd, rfgsm
from spikeguard.runtime import eval_mode, forked_rng
from spikeguard.attacks import autoattack_adapter as library
from spikeguard.attacks.events import random_events, sparse_events, within_event_budget
from spikeguard.attacks.noise import NOISES
from spikeguard.errors import UserError
from spikeguard.evaluation import bank
from spikeguard.evaluation.stochastic import correct_fraction, is_stochastic
from spikeguard.evaluation.suites import EVENTS, LIBRARY_NORMS, AttackSpec, Suite
from spikeguard.evaluation.threat_models import ThreatModel
from spikeguard.snn import spiking_layers

BROKEN = 0.5  # a score below this counts as broken (for a stochastic model: wrong on most draws)
NATIVE = "native"  # the one member of an external model: its own backward pass


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


LIBRARY = LIBRARY_NORMS  # AutoAttack's own attacks: they read C, H, W off an image batch


def event_budget(spec: AttackSpec, threat: ThreatModel | None) -> int:
    """An event attack's budget: its own, else the evaluation's (events-l0)."""
    if spec.params.get("budget") is not None:
        return spec.params["budget"]
    if threat is None or not threat.events:
        raise UserError(f"attack '{spec.label}' edits whole events; it needs the events-l0 threat model")
    return threat.budget


def craft(spec: AttackSpec, target: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, draws: int,
          generator: torch.Generator, num_classes: int, threat: ThreatModel | None = None) -> torch.Tensor:
    """Adversarial examples of one white-box or query attack against ``target`` (the model under one
    estimator). Event attacks need ``threat`` (events-l0: the budget and frame range)."""
    p = spec.params
    if spec.attack == "sparse-events":
        if threat is None or not threat.events:
            raise UserError(f"attack '{spec.label}' edits whole events; it needs the events-l0 threat model")
        return sparse_events(target, x, y, event_budget(spec, threat), threat.frame_range, p["steps"], draws)
    if spec.attack in LIBRARY and x.dim() == 5:  # the one place frames become a 4-D view
        folded = craft(spec, FoldedFrames(target, x.shape[1:]), x.flatten(1, 2), y, eps, draws, generator,
                       num_classes, threat)
        return folded.reshape(x.shape)
    lib = {"num_classes": num_classes, "generator": generator}
    if spec.attack == "fgsm":
        return fgsm(target, x, y, eps, draws=draws)
    if spec.attack == "rfgsm":
        return rfgsm(target, x, y, eps, p["alpha"] * eps, generator=generator, draws=draws)
    if spec.attack == "pgd":
        alpha = p["alpha"] * eps if p["alpha"] is not None else 2.5 * eps / p["steps"]
        return pgd(target, x, y, eps, alpha, p["steps"], random_start=p["random_start"], generator=generator,
                   restarts=p["restarts"], draws=draws)
    if spec.attack in ("apgd-ce", "apgd-dlr"):
        return library.apgd(target, x, y, eps, loss=spec.attack[5:], steps=p["steps"], restarts=p["restarts"],
                            norm=spec.norm, draws=draws, **lib)
    if spec.attack == "apgd-t":
        return library.apgd_targeted(target, x, y, eps, steps=p["steps"], restarts=p["restarts"], norm=spec.norm,
                                     draws=draws, **lib)
    if spec.attack == "fab-t":
        return library.fab_targeted(target, x, y, eps, steps=p["steps"], restarts=p["restarts"], norm=spec.norm,
                                    **lib)
    if spec.attack == "autoattack":
        return library.autoattack_standard(target, x, y, eps, norm=spec.norm, draws=draws, **lib)
    if spec.attack == "square":
        return library.square(target, x, y, eps, queries=p["queries"], restarts=p["restarts"], norm=spec.norm,
                              p_init=p["p_init"], **lib)
    raise ValueError(f"craft() does not make '{spec.attack}' examples")


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


class SuiteRunner:
    """Holds what every batch shares; ``run(batch)`` returns one row per sample."""

    def __init__(self, model: nn.Module, suite: Suite, eps: float, num_classes: int, seed: int, draws: int,
                 source: nn.Module | None = None, threat: ThreatModel | None = None):
        """``threat`` None: the l-inf attacks on whatever input shape the data have (images or frames)."""
        if threat is not None:
            threat.check_suite(suite, transfer=source is not None)
        elif any(s.attack in EVENTS for s in suite.attacks):
            raise UserError("the suite's event attacks need the events-l0 threat model (a budget and frame range)")
        self.model, self.suite, self.eps, self.num_classes = model, suite, eps, num_classes
        self.threat = threat
        self.seed, self.draws, self.source = seed, draws, source
        self.seconds: dict[str, float] = {spec.label: 0.0 for spec in suite.attacks}
        if source is not None:
            self.seconds["transfer"] = 0.0
        self.twins: dict = {}  # BPDA wrappers, built once per model
        # A model without spikeguard spiking layers (an external one) has its own backward only: one member
        # stands for all, instead of repeating the same attack under every name.
        self.native = bool(spiking_layers(model))
        self.gradient_estimators = tuple(dict.fromkeys(e for s in suite.attacks if s.white_box
                                                       for e in self.members(s)))

    def members(self, spec: AttackSpec) -> tuple[str, ...]:
        return spec.estimators if self.native or not spec.estimators else (NATIVE,)

    def score(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return correct_fraction(self.model, x, y, self.draws)

    def run(self, batch: Batch) -> list[dict]:
        x, y = batch.x, batch.y
        with forked_rng(x.device, seed=batch_seed(self.seed, batch.number, 0)):  # stochastic models' own draws
            clean = self.score(x, y)
            rows = [{"index": i, "label": int(t), "clean_correct": float(c)}
                    for i, t, c in zip(batch.indices, y.tolist(), clean.tolist())]
            self._zero_gradients(x, y, clean, rows)
            standing = clean.clone()  # the ensemble so far
            for slot, spec in enumerate(self.suite.attacks, start=1):
                t0 = time.perf_counter()
                generator = torch.Generator().manual_seed(batch_seed(self.seed, batch.number, slot))
                start = standing if spec.params.get("survivors_only") else clean
                worst = self._attack(spec, x, y, start, generator, rows)
                standing = torch.minimum(standing, worst)
                self.seconds[spec.label] += time.perf_counter() - t0
            if self.source is not None:
                t0 = time.perf_counter()
                generator = torch.Generator().manual_seed(batch_seed(self.seed, batch.number, 999))
                self._transfer(x, y, clean, generator, rows)
                self.seconds["transfer"] += time.perf_counter() - t0
        return rows

    def _record(self, label: str, members: dict[str, torch.Tensor], order: Sequence[str], clean: torch.Tensor,
                rows: list[dict]) -> torch.Tensor:
        """Write an attack's per-estimator scores (cumulative in a cascade) and its worst case into rows."""
        worst = clean.clone()
        first_break = [""] * len(rows)
        for member in order:
            scores = members[member]
            for i, (before, now) in enumerate(zip(worst.tolist(), scores.tolist())):
                if now < before:  # the member that reached the worst case (first, if several did)
                    first_break[i] = member
            worst = torch.minimum(worst, scores)
            for row, value in zip(rows, worst.tolist() if self.suite.cascade else scores.tolist()):
                row[f"{label}|{member}"] = value
        for row, value, member in zip(rows, worst.tolist(), first_break):
            row[label] = value
            row[f"{label}|broken_by"] = member
        return worst

    def _attack(self, spec: AttackSpec, x, y, clean, generator, rows) -> torch.Tensor:
        """Run one attack from the per-sample scores ``clean``; returns its per-sample worst case."""
        eps = self.eps if spec.eps is None else spec.eps
        if spec.attack == "random-events":
            budget = event_budget(spec, self.threat)
            draws = [self.score(within_event_budget(random_events(x, budget, self.threat.frame_range, generator),
                                                    x, budget, self.threat.frame_range), y)
                     for _ in range(spec.params["draws"])]
            return self._random_draws(spec, draws, clean, rows)
        if spec.attack in NOISES:
            draws = [self.score(NOISES[spec.attack](x, eps, generator), y) for _ in range(spec.params["draws"])]
            return self._random_draws(spec, draws, clean, rows)
        members = self.members(spec) or ("",)
        standing = clean.clone()
        results = {}
        for member in members:
            # every sample with any correct draw left is attacked (for a deterministic model: every
            # sample still correct)
            idx = ((standing if self.suite.cascade else clean) > 0).nonzero().squeeze(1)
            scores = clean.clone()
            if idx.numel():
                context = bank.under(self.model, member, self.twins) if member else contextlib.nullcontext(self.model)
                with eval_mode(self.model), context as target:
                    x_adv = craft(spec, target, x[idx], y[idx], eps, self.draws, generator, self.num_classes,
                                  self.threat)
                if spec.attack in EVENTS:
                    x_adv = within_event_budget(x_adv, x[idx], event_budget(spec, self.threat),
                                                self.threat.frame_range)
                else:
                    x_adv = within_budget(x_adv, x[idx], eps, spec.norm)
                scores[idx] = torch.minimum(clean[idx], self.score(x_adv, y[idx]))
            results[member or spec.attack] = scores
            standing = torch.minimum(standing, scores)
        return self._record(spec.label, results, list(results), clean, rows)

    def _random_draws(self, spec: AttackSpec, draws: list[torch.Tensor], clean, rows) -> torch.Tensor:
        """A random baseline's worst case over its draws (its accuracy) and their mean (in the rows)."""
        stacked = torch.stack(draws)
        worst = torch.minimum(clean, stacked.min(0).values)
        for row, mean in zip(rows, torch.minimum(clean, stacked.mean(0)).tolist()):
            row[f"{spec.label}|mean"] = mean
        return self._record(spec.label, {"draws": worst}, ["draws"], clean, rows)

    def _transfer(self, x, y, clean, generator, rows) -> None:
        steps = self.suite.transfer["steps"]
        results = {}
        for member in self.suite.transfer["estimators"]:
            with eval_mode(self.source), bank.under(self.source, member, self.twins) as target:
                x_adv = pgd(target, x, y, self.eps, 2.5 * self.eps / steps, steps, generator=generator)
            results[member] = torch.minimum(clean, self.score(within_budget(x_adv, x, self.eps, "linf"), y))
        self._record("transfer", results, list(results), clean, rows)

    def _zero_gradients(self, x, y, clean, rows) -> None:
        """Per sample, the estimators under which the input gradient at the clean point is exactly zero:
        an attack that starts there sees nothing (masked gradients)."""
        zero = [[] for _ in rows]
        for member in self.gradient_estimators:
            with eval_mode(self.model), bank.under(self.model, member, self.twins) as target:
                grad, _ = input_gradient(target, x, y, self.draws)
            for i, flat in enumerate((grad.flatten(1) == 0).all(1).tolist()):
                if flat:
                    zero[i].append(member)
        for row, names in zip(rows, zero):
            row["zero_gradient"] = " ".join(names)


def run_suite(model: nn.Module, dataset, suite: Suite, eps: float, *, num_classes: int, n: int | None = None,
              batch_size: int = 256, seed: int = 0, device: torch.device | str = "cpu", draws: int | None = None,
              source: nn.Module | None = None, batches: Sequence[int] | None = None, progress: bool = True,
              on_batch: Callable[[list[dict]], None] | None = None,
              threat: ThreatModel | None = None) -> tuple[list[dict], dict]:
    """Rows of per-sample outcomes for the chosen batches (all by default), and run facts: whether the
    model is stochastic, the draws used, and seconds per attack. ``threat``: see SuiteRunner."""
    n = len(dataset) if n is None else min(n, len(dataset))
    device = torch.device(device)
    model = model.to(device)
    probe = torch.stack([dataset[i][0] for i in range(min(n, 32))]).to(device)
    with forked_rng(device, seed=seed):
        stochastic = is_stochastic(model, probe)
    used = draws if draws is not None else (suite.eot_draws if stochastic else 1)
    runner = SuiteRunner(model, suite, eps, num_classes, seed, used, source.to(device) if source else None,
                         threat=threat)
    rows: list[dict] = []
    for batch in tqdm(make_batches(dataset, n, batch_size, batches, device), desc=f"suite {suite.name}",
                      leave=False, disable=None if progress else True):
        batch_rows = runner.run(batch)
        rows.extend(batch_rows)
        if on_batch is not None:
            on_batch(batch_rows)
    facts = {"n": n, "stochastic": stochastic, "draws": used, "seconds": runner.seconds,
             "gradient_estimators": list(runner.gradient_estimators)}
    return rows, facts
