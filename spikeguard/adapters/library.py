"""The common interface of an SNN library's neurons, and the one registry of the libraries spikeguard drives.

A library adapter (one module per library: spikingjelly_neurons.py, snntorch_neurons.py) says how to find
its neurons, reset them, read their threshold and dynamics, and which attribute holds the spike's
surrogate. Everything else (estimator rules, state, BPDA, provenance) is written once against this
interface. Neither library is imported unless a model uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from spikeguard.registry import Registry

LIBRARIES = Registry("SNN library")
# name -> the adapter object (a LibraryAdapter), loaded on first use
LIBRARIES.register("spikingjelly", "spikeguard.adapters.spikingjelly_neurons:SPIKINGJELLY")
LIBRARIES.register("snntorch", "spikeguard.adapters.snntorch_neurons:SNNTORCH")


class LibraryAdapter:
    """What spikeguard needs to know of one library. Subclasses fill in the class attributes and methods."""

    name: str = ""
    attribute: str = ""                 # the neuron attribute every forward step calls with v - threshold
    strict: bool = False                # fires at v > threshold (True) or v >= threshold (False)
    known: tuple[str, ...] = ()         # neuron classes (and subclasses) whose dynamics the rules know

    def is_neuron(self, module: nn.Module) -> bool:
        return hasattr(module, self.attribute)

    def reset(self, module: nn.Module) -> None:
        """Clear one module's neuron state (a no-op for modules that keep none)."""
        raise NotImplementedError

    def multi_step(self, module: nn.Module) -> bool:
        """Whether one call of the neuron sees every time step ([T, N, ...]) rather than one."""
        return False

    def threshold(self, module: nn.Module) -> torch.Tensor | float:
        raise NotImplementedError

    def dynamics(self, module: nn.Module, known: str) -> tuple[Any, Any]:
        """(leak per step, scale of the input into the membrane): spikeguard's u <- leak * u + scale * I."""
        raise NotImplementedError


def library_of(module: nn.Module) -> LibraryAdapter | None:
    """The adapter of the library the module's class (or a base class) comes from, or None."""
    for cls in type(module).__mro__:
        top = cls.__module__.partition(".")[0]
        if top in LIBRARIES:
            return LIBRARIES.load(top)
    return None


@dataclass
class ExternalNeuron:
    """One library neuron inside a model."""

    name: str
    module: nn.Module
    lib: LibraryAdapter
    known: str | None       # the library class whose dynamics the rules know, or None

    @property
    def library(self) -> str:
        return self.lib.name

    @property
    def attribute(self) -> str:
        return self.lib.attribute

    @property
    def class_name(self) -> str:
        return type(self.module).__name__

    @property
    def multi_step(self) -> bool:
        return self.lib.multi_step(self.module)

    def threshold(self) -> torch.Tensor | float:
        return self.lib.threshold(self.module)

    def dynamics(self) -> tuple[Any, Any]:
        if self.known is None:
            raise ValueError(f"no known dynamics for {self.class_name}")
        return self.lib.dynamics(self.module, self.known)


def external_neurons(model: nn.Module) -> list[ExternalNeuron]:
    """Every SpikingJelly / snnTorch spiking neuron of ``model`` (a module with a surrogate attribute)."""
    out = []
    for name, module in model.named_modules():
        lib = library_of(module)
        if lib is None or not lib.is_neuron(module):
            continue
        mro = [cls.__name__ for cls in type(module).__mro__]
        out.append(ExternalNeuron(name, module, lib, next((k for k in lib.known if k in mro), None)))
    return out


def has_external_neurons(model: nn.Module) -> bool:
    return bool(external_neurons(model))


def uses_library(model: nn.Module) -> bool:
    return any(library_of(m) is not None for m in model.modules())


def reset_state(model: nn.Module) -> None:
    """Clear the neuron state of every SpikingJelly / snnTorch module of ``model``."""
    for module in model.modules():
        lib = library_of(module)
        if lib is not None:
            lib.reset(module)
