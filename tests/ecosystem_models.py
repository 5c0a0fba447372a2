"""Tutorial-style CSNNs of SpikingJelly and snnTorch for digits (1 x 8 x 8), and a few training steps.

Written the way each library's tutorial writes a convolutional SNN: SpikingJelly with multi-step layers
and neurons, the image repeated T times, the firing rate of the last layer as output; snnTorch with a
Sequential of layers and Leaky neurons holding their own state (init_hidden), a loop over time steps and
the spike counts as output."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

T = 4


class JellyCSNN(nn.Module):
    def __init__(self, neuron: str = "IFNode", surrogate_function=None, step_mode: str = "m"):
        super().__init__()
        from spikingjelly.activation_based import functional, layer, surrogate
        from spikingjelly.activation_based import neuron as sj_neuron

        make = getattr(sj_neuron, neuron)
        sg = surrogate_function if surrogate_function is not None else surrogate.ATan()
        kwargs = {} if neuron == "IFNode" else {"tau": 2.0} if neuron == "LIFNode" else {}
        self.net = nn.Sequential(
            layer.Conv2d(1, 16, 3, padding=1, bias=False), layer.BatchNorm2d(16),
            make(surrogate_function=sg, **kwargs), layer.AvgPool2d(2),
            layer.Flatten(), layer.Linear(16 * 4 * 4, 10, bias=False), make(surrogate_function=sg, **kwargs))
        functional.set_step_mode(self, step_mode)
        self.step_mode = step_mode

    def forward(self, x):
        if self.step_mode == "m":
            return self.net(x.unsqueeze(0).repeat(T, 1, 1, 1, 1)).mean(0)
        return torch.stack([self.net(x) for _ in range(T)]).mean(0)


class TorchCSNN(nn.Module):
    def __init__(self, spike_grad=None):
        super().__init__()
        import snntorch as snn
        from snntorch import surrogate

        sg = spike_grad if spike_grad is not None else surrogate.atan()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.AvgPool2d(2), snn.Leaky(beta=0.9, spike_grad=sg, init_hidden=True),
            nn.Flatten(), nn.Linear(16 * 4 * 4, 10), snn.Leaky(beta=0.9, spike_grad=sg, init_hidden=True))

    def forward(self, x):
        from snntorch import utils

        utils.reset(self.net)
        return torch.stack([self.net(x) for _ in range(T)]).sum(0)


def reset(model: nn.Module) -> None:
    from spikeguard.adapters import reset_state

    reset_state(model)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 3, lr: float = 0.05, seed: int = 0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr * 0.1)
    model.train()
    for _ in range(epochs):
        for i in range(0, len(x), 64):
            reset(model)
            loss = F.cross_entropy(model(x[i:i + 64]) * 4, y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    reset(model)
    return model.eval()
