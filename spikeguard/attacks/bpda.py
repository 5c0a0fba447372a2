"""BPDA: a spiking network's outputs with the gradient of its smooth twin (ReLU in place of spikes).

``BPDAModel(snn)`` returns exactly the SNN's logits, while its backward pass is that of the twin, so every
attack, ours or a library's, uses the twin's gradient without knowing it: the output is
``smooth(x) + (snn(x) - smooth(x)).detach()``. The twin of a spikeguard SNN is its ANN twin (same weights,
ReLU neurons, one time step); for SpikingJelly / snnTorch neurons it is the same model run while ``twin()``
(a context manager, spikeguard.adapters.rules) has each known neuron answer relu(scale * I / thr). Library
neuron state is cleared before each pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn


class BPDAModel(nn.Module):
    def __init__(self, snn: nn.Module, twin: Callable[[], contextlib.AbstractContextManager] | None = None):
        super().__init__()
        self.snn, self._twin = snn, twin
        if twin is None:
            from spikeguard.snn import ann_twin

            self.ann = ann_twin(snn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from spikeguard.adapters import reset_state

        with torch.no_grad():
            reset_state(self.snn)
            spiking = self.snn(x)
        if self._twin is None:
            # ann_twin copies module modes at creation; follow the SNN's current mode (BatchNorm eval or train)
            for twin, original in zip(self.ann.modules(), self.snn.modules()):
                twin.training = original.training
            smooth = self.ann(x)
        else:
            with self._twin():
                reset_state(self.snn)
                smooth = self.snn(x)
        return smooth + (spiking - smooth).detach()
