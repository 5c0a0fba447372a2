"""Dead surrogates: per spiking layer, the fraction of exactly-zero local derivatives d spike / d current
that one backward pass uses (the one helper the evaluation's probe and ``spikeguard analyze`` share).

A compact-support surrogate (triangle, rectangular, HART's triangle) is exactly zero wherever the membrane lies
farther from the threshold than its width. On an honest SNN that is a part of the neurons (about half of a
digits SNN's first layer under triangle:1); on one whose thresholds and the currents feeding them are large (a
scaled model, folded BatchNorm) it is almost every neuron, and the input gradient itself is exactly zero.
The derivatives are those the rules' backward passes hand to spikeguard/snn/local_derivatives.py. A layer
whose backward runs through no spikeguard rule (a library neuron under its own surrogate, or one the member
cannot drive) is listed as unmeasured, with the reason.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from spikeguard.adapters import external_neurons, reset_state
from spikeguard.runtime import eval_mode
from spikeguard.snn.local_derivatives import recording
from spikeguard.snn.neuron import IFNeuron

NOT_READ = ("no spikeguard rule's derivative passed through it (a library neuron under its own surrogate, "
            "which spikeguard cannot read)")


def spiking_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every spiking layer by name, in model order: spikeguard IFNeurons that spike, and SpikingJelly /
    snnTorch neurons."""
    external = {n.name for n in external_neurons(model)}
    return {name: m for name, m in model.named_modules()
            if (isinstance(m, IFNeuron) and m.spiking) or name in external}


def dead_fractions(model: nn.Module, x: torch.Tensor, target: nn.Module | None = None,
                   reasons: dict[str, str] | None = None) -> dict:
    """Per spiking layer of ``model``, the fraction of exactly-zero local derivatives over the batch ``x``
    (every neuron, time step and sample) in one backward pass of ``target`` (default: ``model`` as its
    layers are set; or ``model`` under a bank member, e.g. ``bank.under(model, member)``). ``reasons``: why
    a layer may be left unmeasured. Returns {"layers": {name: fraction}, "unmeasured": {name: why}}."""
    layers = spiking_modules(model)
    with eval_mode(model), contextlib.ExitStack() as stack, torch.enable_grad():
        counts = stack.enter_context(recording(layers))
        xi = x.detach().clone().requires_grad_(True)
        reset_state(model)
        out = (model if target is None else target)(xi)
        if out.requires_grad:
            torch.autograd.grad(out.float().sum(), xi, allow_unused=True)
        reset_state(model)
    fractions = {name: round(counts[name][0] / counts[name][1], 6) for name in layers if counts.get(name, [0, 0])[1]}
    unmeasured = {name: (reasons or {}).get(name) or NOT_READ for name in layers if name not in fractions}
    return {"layers": fractions, "unmeasured": unmeasured}
