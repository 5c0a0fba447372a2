"""A log of the local derivatives d spike / d current that backward passes use, per spiking layer, kept only
while ``recording`` runs (spikeguard/snn/dead_zone.py counts the exact zeros among them).

The backward of every spikeguard rule (``SpikeFunction`` and the rate / HART time-mean gradient in
spikeguard/snn/estimators.py, the adapters' spike function for SpikingJelly / snnTorch neurons) hands the
local derivative it multiplies by to ``RECORDER.add``, tagged with the layer whose forward created it
(forward hooks set ``RECORDER.layer`` while ``recording`` runs; outside it the tag is None and nothing is
kept). Only derivatives a backward pass used count: snnTorch's reset, which calls the surrogate on a
detached path, gets no backward. Imports nothing of spikeguard: the rules import it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class _Recorder:
    """Zero and total counts of local derivatives per layer name, while ``counts`` is not None."""

    def __init__(self) -> None:
        self.layer: str | None = None
        self.counts: dict[str, list[int]] | None = None

    def add(self, layer: str | None, local: torch.Tensor) -> None:
        if layer is None or self.counts is None:
            return
        found = self.counts.setdefault(layer, [0, 0])
        found[0] += int((local == 0).sum())
        found[1] += local.numel()


RECORDER = _Recorder()


@contextlib.contextmanager
def recording(layers: dict[str, nn.Module]) -> Iterator[dict[str, list[int]]]:
    """Counts of the local derivatives each of ``layers`` creates while the block runs (its backward passes
    included): {name: [zeros, total]}."""
    counts: dict[str, list[int]] = {}
    stack: list[str | None] = []

    def enter(name):
        def hook(module, args):
            stack.append(RECORDER.layer)
            RECORDER.layer = name
        return hook

    def leave(module, args, out):
        RECORDER.layer = stack.pop() if stack else None

    handles = []
    try:
        for name, module in layers.items():
            handles += [module.register_forward_pre_hook(enter(name)), module.register_forward_hook(leave)]
        RECORDER.counts, RECORDER.layer = counts, None
        yield counts
    finally:
        for handle in handles:
            handle.remove()
        RECORDER.counts, RECORDER.layer = None, None
