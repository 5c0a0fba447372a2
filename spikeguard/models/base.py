"""What every spikeguard model shares: encoder in front, time-averaged logits out."""

from __future__ import annotations

import torch
from torch import nn

from spikeguard.snn import ENCODERS, IFNeuron
from spikeguard.snn.registry import Estimator


class SpikingNet(nn.Module):
    """encoder -> body -> mean over time. Maps [N, C, H, W] images in [0, 1] to [N, classes] logits.

    ``body`` works on time-folded tensors [T * N, ...] (see spikeguard.snn.neuron).
    """

    def __init__(self, body: nn.Module, time_steps: int, mean, std, encoder: str = "direct"):
        super().__init__()
        self.time_steps = int(time_steps)
        self.encoder = ENCODERS[encoder](self.time_steps, mean, std)
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(self.encoder(x))
        return out.reshape(self.time_steps, x.shape[0], *out.shape[1:]).mean(0)


def conv_bn(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout)]


def neuron_factory(time_steps: int, tau: float, estimator: str | Estimator, spiking: bool = True):
    """A function making identically configured neurons, so a model builds them in one line each;
    ``spiking=False`` makes them ReLUs (the ANN twin, spikeguard.snn.neuron)."""

    def neuron() -> IFNeuron:
        made = IFNeuron(tau=tau, estimator=estimator, time_steps=time_steps)
        made.spiking = spiking
        return made

    return neuron
