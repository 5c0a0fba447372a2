"""snnTorch neurons: ``spike_grad`` holds the spike's surrogate, firing at v > threshold; every call is one
time step, the membrane kept in the module (``reset_mem`` clears it)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from spikeguard.adapters.library import LibraryAdapter


class SnnTorch(LibraryAdapter):
    name = "snntorch"
    attribute = "spike_grad"
    strict = True
    known = ("Leaky",)

    def reset(self, module: nn.Module) -> None:
        reset_mem = getattr(module, "reset_mem", None)
        if callable(reset_mem):
            reset_mem()

    def threshold(self, module: nn.Module) -> torch.Tensor:
        neuron: Any = module  # a library neuron: its attributes are the library's, not nn.Module's
        return neuron.threshold.detach()

    def dynamics(self, module: nn.Module, known: str):
        neuron: Any = module
        return neuron.beta.detach().clamp(0, 1), 1.0


SNNTORCH = SnnTorch()


def snntorch_logits(spk_rec: torch.Tensor, mem_rec: torch.Tensor | None = None, use: str = "spikes") -> torch.Tensor:
    """Logits [N, classes] from snnTorch's recorded output (``spk_rec``, ``mem_rec``: [T, N, classes], the
    time-major stacks its tutorials return): the spike count over time (``use="spikes"``, what their
    rate-coded accuracy reads) or the time mean of the output membrane (``use="membrane"``, what a
    membrane-based loss reads). Put it at the end of ``forward`` so spikeguard gets logits."""
    if use == "spikes":
        return spk_rec.sum(0)
    if use == "membrane":
        if mem_rec is None:
            raise ValueError("use='membrane' needs mem_rec")
        return mem_rec.mean(0)
    raise ValueError(f"use must be 'spikes' or 'membrane', got {use!r}")
