"""The per-sample worst case over an ensemble: a sample is robust only if no member breaks it.

A member is anything that yields adversarial examples: an attack under one backward estimator, an attack
of a suite, a draw of a random baseline. :class:`WorstCase` is the one place that keeps, per sample, the
lowest score any member reached and the first member that reached it; the evaluation runner, the
unbounded check, the strongest-example search of the analysis and :func:`worst_case_accuracy` all use it.

Scores lie in [0, 1]: 1 or 0 (classified correctly or not) for a deterministic model, the fraction of
correct draws for a stochastic one. A score below ``BROKEN`` counts as broken.

Run as a cascade, each member attacks only the samples still standing, so the ensemble costs little more
than its first member once that member has broken most samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from spikeguard.runtime import eval_mode
from spikeguard.snn import estimator

BROKEN = 0.5  # a score below this counts as broken (for a stochastic model: wrong on most draws)

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


class WorstCase:
    """Per sample, the lowest score seen so far, the first member that reached it and, when ``inputs``
    are given, the input that reached it."""

    def __init__(self, start: torch.Tensor, inputs: torch.Tensor | None = None):
        self.score = start.clone()
        self.by = [""] * len(start)
        self.example = inputs.clone() if inputs is not None else None

    def standing(self) -> torch.Tensor:
        """Indices of the samples a member can still lower (any correct draw left)."""
        return (self.score > 0).nonzero().squeeze(1)

    def update(self, member: str, idx: torch.Tensor, scores: torch.Tensor,
               examples: torch.Tensor | None = None) -> torch.Tensor:
        """Take member ``member``'s scores of samples ``idx``; returns the per-sample worst case so far.
        Ties keep the earlier member (the first that reached the worst case is named)."""
        idx, scores = idx.to(self.score.device), scores.to(self.score.device)  # callers may count on the CPU
        if examples is not None and self.example is not None:
            examples = examples.to(self.example.device)
        lower = scores < self.score[idx]
        for i in idx[lower].tolist():
            self.by[i] = member
        self.score[idx[lower]] = scores[lower]
        if self.example is not None and examples is not None:
            self.example[idx[lower]] = examples[lower]
        return self.score

    def broken_by(self) -> list[str]:
        """Per sample, the first member that broke it, "" if it stands."""
        return [by if s < BROKEN else "" for by, s in zip(self.by, self.score.tolist())]


@dataclass
class EnsembleResult:
    clean_correct: torch.Tensor  # bool [N]
    robust: torch.Tensor         # bool [N]: clean-correct and unbroken by every estimator
    broken_by: list[str]         # per sample: "" if robust, "clean" if misclassified unattacked, else estimator

    @property
    def accuracy(self) -> float:
        return self.robust.float().mean().item()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with eval_mode(model):
        return model(x).argmax(1)


def worst_case_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack,
                        estimators: Sequence[str], clean_correct: torch.Tensor | None = None) -> EnsembleResult:
    """Per-sample worst case of ``attack`` over ``estimators`` (a cascade; see module docstring).
    ``clean_correct`` may be passed when the caller already has it, to save a forward pass."""
    if clean_correct is None:
        clean_correct = predict(model, x) == y
    worst = WorstCase(clean_correct.float())
    with eval_mode(model):
        for name in estimators:
            idx = worst.standing()
            if idx.numel() == 0:
                break
            with estimator(model, name):
                x_adv = attack(model, x[idx], y[idx])
            worst.update(name, idx, (predict(model, x_adv) == y[idx]).float())
    broken_by = ["clean" if not ok else by for ok, by in zip(clean_correct.tolist(), worst.broken_by())]
    return EnsembleResult(clean_correct, worst.score >= BROKEN, broken_by)
