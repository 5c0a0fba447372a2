"""SpikingJelly (``activation_based``) neurons: ``surrogate_function`` holds the spike's surrogate, firing
at v >= threshold; ``step_mode`` "m" neurons see [T, N, ...] per call, "s" neurons one step."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from spikeguard.adapters.library import LibraryAdapter


class SpikingJelly(LibraryAdapter):
    name = "spikingjelly"
    attribute = "surrogate_function"
    strict = False
    known = ("ParametricLIFNode", "LIFNode", "IFNode")

    def reset(self, module: nn.Module) -> None:
        # what functional.reset_net does, for SpikingJelly's modules only (another library's module may
        # hold a tensor named reset: snnTorch's neurons do)
        reset = getattr(module, "reset", None)
        if callable(reset):
            reset()

    def multi_step(self, module: nn.Module) -> bool:
        return getattr(module, "step_mode", "s") == "m"

    def threshold(self, module: nn.Module) -> float:
        neuron: Any = module  # a library neuron: its attributes are the library's, not nn.Module's
        return float(neuron.v_threshold)

    def dynamics(self, module: nn.Module, known: str):
        if known == "IFNode":
            return 1.0, 1.0
        neuron: Any = module
        decay = 1.0 / float(neuron.tau) if known == "LIFNode" else float(torch.sigmoid(neuron.w.detach()))
        return 1.0 - decay, (decay if neuron.decay_input else 1.0)


SPIKINGJELLY = SpikingJelly()
