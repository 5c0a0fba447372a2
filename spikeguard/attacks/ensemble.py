"""Estimator ensemble: a sample is robust only if no backward estimator yields an example that breaks it.

Run as a cascade: each estimator attacks only the samples that are still standing, so the ensemble costs
little more than its first member once that member has broken most samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from spikeguard.runtime import eval_mode
from spikeguard.snn import estimator

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


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
    standing = clean_correct.clone()
    broken_by = ["" if ok else "clean" for ok in clean_correct.tolist()]
    with eval_mode(model):
        for name in estimators:
            idx = standing.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            with estimator(model, name):
                x_adv = attack(model, x[idx], y[idx])
            fooled = predict(model, x_adv) != y[idx]
            for i in idx[fooled].tolist():
                broken_by[i] = name
            standing[idx[fooled]] = False
    return EnsembleResult(clean_correct, standing, broken_by)
