"""A small white-box evaluation: clean accuracy, then FGSM and PGD robust accuracy as the per-sample
worst case over METHOD.md's four backward estimators. The full attack suite replaces this later."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from functools import partial

import torch
from torch import nn
from tqdm import tqdm

from spikeguard.attacks import eval_mode, fgsm, pgd, worst_case_accuracy
from spikeguard.attacks.ensemble import predict
from spikeguard.errors import UserError
from spikeguard.snn import parse_estimator

# The published ensemble: BPTT with triangle (gamma 1), sigmoid (alpha 4), atan (alpha 2), and BPTR.
PAPER_ESTIMATORS = ("triangle:1", "sigmoid:4", "atan:2", "bptr")


@dataclass
class EvalSettings:
    eps: float
    pgd_steps: int = 10
    pgd_alpha: float | None = None   # None: 2.5 * eps / steps
    estimators: tuple[str, ...] = PAPER_ESTIMATORS
    n: int | None = None             # evaluate the first n test samples; None: all
    batch_size: int = 256
    seed: int = 0
    random_start: bool = True
    attacks: tuple[str, ...] = field(default=("fgsm", "pgd"))

    def resolved(self) -> "EvalSettings":
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise UserError(f"eps must be a non-negative number, got {self.eps}")
        if self.pgd_steps < 1:
            raise UserError(f"pgd steps must be at least 1, got {self.pgd_steps}")
        if self.n is not None and self.n < 1:
            raise UserError(f"n must be at least 1, got {self.n}")
        if self.batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {self.batch_size}")
        for name in self.estimators:
            parse_estimator(name)
        alpha = self.pgd_alpha if self.pgd_alpha is not None else 2.5 * self.eps / self.pgd_steps
        if alpha < 0 or not math.isfinite(alpha):
            raise UserError(f"pgd alpha must be a non-negative number, got {alpha}")
        return EvalSettings(**{**asdict(self), "pgd_alpha": alpha, "estimators": tuple(self.estimators)})


def evaluate_model(model: nn.Module, dataset, settings: EvalSettings, device: torch.device | str = "cpu",
                   progress: bool = True) -> dict:
    """{"n", "clean_accuracy", "robust_accuracy": {attack: acc}, "worst_case_accuracy", "broken_by":
    {attack: {member: count}}, "seconds": {attack: s}}. Robust accuracy counts a sample only if it is
    clean-correct and survives every estimator; the worst case also needs it to survive every attack."""
    s = settings.resolved()
    n = len(dataset) if s.n is None else min(s.n, len(dataset))
    generator = torch.Generator().manual_seed(s.seed)
    attacks = {
        "fgsm": partial(fgsm, eps=s.eps),
        "pgd": partial(pgd, eps=s.eps, alpha=s.pgd_alpha, steps=s.pgd_steps, random_start=s.random_start,
                       generator=generator),
    }
    unknown = [a for a in s.attacks if a not in attacks]
    if not s.attacks or unknown:
        raise UserError(f"unknown or no attack(s) {unknown}; choose from {', '.join(attacks)}")
    require_deterministic(model, torch.stack([dataset[i][0] for i in range(min(n, 32))]).to(device))
    clean, robust = [], {a: [] for a in s.attacks}
    broken = {a: {} for a in s.attacks}
    seconds = {a: 0.0 for a in s.attacks}
    batches = range(0, n, s.batch_size)
    for start in tqdm(batches, desc="evaluate", leave=False, disable=None if progress else True):
        idx = range(start, min(start + s.batch_size, n))
        x = torch.stack([dataset[i][0] for i in idx]).to(device)
        y = torch.as_tensor([int(dataset[i][1]) for i in idx]).to(device)
        clean_correct = predict(model, x) == y  # once per batch, shared by every attack
        for name in s.attacks:
            t0 = time.perf_counter()
            result = worst_case_accuracy(model, x, y, attacks[name], s.estimators, clean_correct)
            seconds[name] += time.perf_counter() - t0
            robust[name].append(result.robust)
            for member in result.broken_by:
                if member:
                    broken[name][member] = broken[name].get(member, 0) + 1
        clean.append(clean_correct)
    return {
        "n": n,
        "clean_accuracy": torch.cat(clean).float().mean().item(),
        "robust_accuracy": {a: torch.cat(r).float().mean().item() for a, r in robust.items()},
        "worst_case_accuracy": torch.stack([torch.cat(r) for r in robust.values()]).all(0).float().mean().item(),
        "broken_by": broken,
        "seconds": seconds,
    }


@torch.no_grad()
def require_deterministic(model: nn.Module, x: torch.Tensor) -> None:
    """Refuse stochastic models (e.g. Poisson encoding): attacking one draw and scoring another inflates
    robustness, and this evaluator has no expectation over transformation (EoT)."""
    with eval_mode(model):
        if not torch.equal(model(x), model(x)):
            raise UserError("the model is stochastic (two forward passes differ); this evaluator has no EoT and "
                            "would overstate its robustness, so it refuses")
