"""Spiking WRN-16-4: pre-activation wide residual blocks (widths 64/128/256, two blocks each) whose
residual and shortcut branches are mixed by a learnable convex combination, as in the SR paper's release.
"""

from __future__ import annotations

import torch
from torch import nn


class MixedResidualBlock(nn.Module):
    """out = a * residual(x) + (1 - a) * shortcut(x), with a = sigmoid(w) in (0, 1) learned.

    Pre-activation: BN -> spike -> conv -> BN -> spike -> conv. A convex mix keeps the input current of
    the next spiking layer on the scale of its inputs however deep the stack is.
    """

    def __init__(self, neuron, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.act1 = nn.BatchNorm2d(cin), neuron()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.act2 = nn.BatchNorm2d(cout), neuron()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.mix_logit = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        residual = self.conv2(self.act2(self.bn2(self.conv1(pre))))
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        a = torch.sigmoid(self.mix_logit)
        return a * residual + (1 - a) * shortcut


def wrn_body(neuron, num_classes: int, in_channels: int, image_size: int, depth: int = 16,
             widen: int = 4) -> nn.Sequential:
    blocks_per_group = (depth - 4) // 6
    widths = [16 * widen, 32 * widen, 64 * widen]
    layers: list[nn.Module] = [nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)]
    cin = 16
    for group, width in enumerate(widths):
        for i in range(blocks_per_group):
            stride = 2 if group > 0 and i == 0 else 1
            layers.append(MixedResidualBlock(neuron, cin, width, stride))
            cin = width
    layers += [nn.BatchNorm2d(cin), neuron(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)
