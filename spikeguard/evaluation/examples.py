"""The adversarial examples an evaluation counted: per sample, the input of lowest score that any scored
attack reached (the first one on ties), starting from the clean input and its clean score. The per-sample
worst case is the minimum of those same scores, so this is the example behind each sample's result."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class ScoredExamples:
    def __init__(self) -> None:
        self.score: dict[int, float] = {}
        self.example: dict[int, torch.Tensor] = {}

    def offer(self, keys: Sequence[int], x: torch.Tensor, scores: torch.Tensor) -> None:
        """Inputs ``x`` of samples ``keys`` (their indices in the evaluated data) scored ``scores``."""
        for key, xi, s in zip(keys, x.detach(), scores.tolist()):
            if key not in self.score or s < self.score[key]:
                self.score[key], self.example[key] = s, xi.to("cpu", copy=True)

    def stacked(self, keys: Sequence[int]) -> torch.Tensor:
        return torch.stack([self.example[k] for k in keys])
