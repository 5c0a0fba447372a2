"""BPDA with the ANN twin: the spiking network's outputs, the ReLU network's gradients.

``BPDAModel(snn)`` returns exactly the SNN's logits, while its backward pass is that of the ANN twin (same
weights, ReLU in place of spikes, one time step). Every attack, ours or a library's, then uses the twin's
gradient without knowing it: the output is ``ann(x) + (snn(x) - ann(x)).detach()``.
"""

from __future__ import annotations

import torch
from torch import nn

from spikeguard.snn import ann_twin


class BPDAModel(nn.Module):
    def __init__(self, snn: nn.Module):
        super().__init__()
        self.snn = snn
        self.ann = ann_twin(snn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ann_twin copies module modes at creation; follow the SNN's current mode (BatchNorm eval or train)
        for twin, original in zip(self.ann.modules(), self.snn.modules()):
            twin.training = original.training
        with torch.no_grad():
            spiking = self.snn(x)
        smooth = self.ann(x)
        return smooth + (spiking - smooth).detach()
