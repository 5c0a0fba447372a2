"""Model-wide settings of the spiking layers: the backward estimator and the ANN twin."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

from torch import nn

from spikeguard.errors import UserError
from spikeguard.snn.encoders import FramesEncoder
from spikeguard.snn.neuron import IFNeuron
from spikeguard.snn.registry import Estimator, parse_estimator

_WIDTH_KEYWORDS = ("width", "gamma", "alpha")


def spiking_layers(model: nn.Module) -> list[IFNeuron]:
    """Every IFNeuron of ``model``, spiking or switched to ReLU (the ANN twin finds its ReLUs here)."""
    return [m for m in model.modules() if isinstance(m, IFNeuron)]


def is_spiking(model: nn.Module) -> bool:
    """Whether any IFNeuron of ``model`` spikes. A network of ReLU-mode neurons only (an ANN twin, or a
    model trained with --network ann) has one exact gradient: no backward estimator changes it."""
    return any(layer.spiking for layer in spiking_layers(model))


def set_estimator(model: nn.Module, spec: str | Estimator, **width) -> Estimator:
    """Switch every spiking layer of ``model`` to one estimator; returns it."""
    est = parse_estimator(spec, _one_width(width))
    layers = spiking_layers(model)
    if not layers:
        raise UserError("model has no spiking layers whose estimator could be set")
    for layer in layers:
        layer.estimator = est
    return est


@contextlib.contextmanager
def estimator(model: nn.Module, spec: str | Estimator, **width) -> Iterator[Estimator]:
    """``with estimator(model, "sigmoid", alpha=4.0): ...`` switches all spiking layers, then restores
    each layer's previous estimator, also when the block raises."""
    layers = spiking_layers(model)
    previous = [layer.estimator for layer in layers]
    try:
        yield set_estimator(model, spec, **width)
    finally:
        for layer, est in zip(layers, previous):
            layer.estimator = est


def _one_width(width: dict) -> float | None:
    unknown = set(width) - set(_WIDTH_KEYWORDS)
    if unknown:
        raise UserError(f"unknown estimator parameter(s) {sorted(unknown)}; use one of {_WIDTH_KEYWORDS}")
    if len(width) > 1:
        raise UserError("give the estimator width once (width, gamma or alpha)")
    return float(next(iter(width.values()))) if width else None


def ann_twin(model: nn.Module) -> nn.Module:
    """The same network with ReLU in place of spikes and one time step, sharing the SNN's parameters and
    buffers (an update to one is an update to the other). Used for BPDA and transfer attacks."""
    twin = copy.deepcopy(model)
    source = dict(model.named_modules())
    # Event frames bring their own time axis: the twin runs every frame (a memoryless ReLU body, so this is
    # the mean of per-frame logits) instead of one step.
    frames = any(isinstance(m, FramesEncoder) for m in twin.modules())
    for name, module in twin.named_modules():
        original = source[name]
        for key in list(module._parameters):
            module._parameters[key] = original._parameters[key]
        for key in list(module._buffers):
            module._buffers[key] = original._buffers[key]
        if hasattr(module, "time_steps") and not frames:
            module.time_steps = 1
        if isinstance(module, IFNeuron):
            module.spiking = False
    return twin
