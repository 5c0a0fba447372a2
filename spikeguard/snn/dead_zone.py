"""Dead surrogates: per spiking layer, the fraction of exactly-zero local derivatives d spike / d current that a
backward pass under one bank member uses.

A compact-support surrogate (triangle, rectangular, HART's triangle) is exactly zero wherever the membrane lies
farther from the threshold than its width. On an honest SNN that is a part of the neurons (about half of a
digits SNN's first layer); on one whose thresholds and the currents feeding them are large (a scaled model,
folded BatchNorm) it is almost every neuron, and the input gradient itself is exactly zero.

How it is measured: the backward of every spikeguard rule (``SpikeFunction``, the rate / HART time-mean
gradient in spikeguard/snn/estimators.py, and the adapters' spike function for SpikingJelly / snnTorch
neurons) hands the local derivative it multiplies by to ``RECORDER``, tagged with the layer whose forward
created it (forward hooks set ``RECORDER.layer`` while ``recording`` runs; outside it the tag is None and
nothing is kept). Only derivatives a backward pass actually used count: snnTorch's reset, which calls the
surrogate on a detached path, does not. A layer whose backward runs through no spikeguard rule (a library
neuron under its own surrogate, or one a member cannot drive) is listed as unmeasured, with the reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

ANN_MEMBER = "ann"
ANN_WHY = "BPDA through the ANN twin: no surrogate (the twin's ReLU gradient)"


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


def spiking_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every spiking layer by name: spikeguard IFNeurons that spike, and SpikingJelly / snnTorch neurons."""
    from spikeguard.adapters import external_neurons
    from spikeguard.snn.neuron import IFNeuron

    found = {name: m for name, m in model.named_modules() if isinstance(m, IFNeuron) and m.spiking}
    found.update({n.name: n.module for n in external_neurons(model)})
    return {name: m for name, m in model.named_modules() if name in found}  # in model order


@contextlib.contextmanager
def recording(layers: dict[str, nn.Module]) -> Iterator[dict[str, list[int]]]:
    """Counts of the local derivatives each of ``layers`` creates while the block runs (the backward
    included); {name: [zeros, total]}."""
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


def dead_fractions(model: nn.Module, x: torch.Tensor, member: str | None = None) -> dict:
    """Per spiking layer of ``model``, the fraction of exactly-zero local derivatives over the batch ``x``
    (every neuron, time step and sample) in one backward pass under bank member ``member`` (None: the
    layers' own settings). Returns {"layers": {name: fraction}, "unmeasured": {name: why}}."""
    from spikeguard.adapters import not_applicable, reset_state
    from spikeguard.adapters.library import external_neurons
    from spikeguard.evaluation import bank
    from spikeguard.runtime import eval_mode

    layers = spiking_modules(model)
    if member == ANN_MEMBER:
        return {"layers": {}, "unmeasured": {name: ANN_WHY for name in layers}}
    driven = {n.name: not_applicable(n, member) for n in external_neurons(model)} if member else {}
    context = bank.under(model, member) if member else contextlib.nullcontext(model)
    with eval_mode(model), context as target, recording(layers) as counts, torch.enable_grad():
        xi = x.detach().clone().requires_grad_(True)
        reset_state(model)
        out = target(xi)
        if out.requires_grad:
            torch.autograd.grad(out.float().sum(), xi, allow_unused=True)
        reset_state(model)
    fractions = {name: round(counts[name][0] / counts[name][1], 6) for name in layers if counts.get(name, [0, 0])[1]}
    unmeasured = {name: driven.get(name) or "no spikeguard rule's derivative passed through it (e.g. a library "
                  "neuron under its own surrogate, which spikeguard cannot read)" for name in layers if name not in fractions}
    return {"layers": fractions, "unmeasured": unmeasured}


def dead_surrogates(model: nn.Module, x: torch.Tensor, members: Sequence[str]) -> dict | None:
    """``dead_fractions`` under each member on the batch ``x``: {"samples": n, "members": {member: ...}};
    None for a model without spiking layers (nothing to measure)."""
    if not spiking_modules(model):
        return None
    return {"samples": int(x.shape[0]), "members": {m: dead_fractions(model, x, m) for m in members}}
