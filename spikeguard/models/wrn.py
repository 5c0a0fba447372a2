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

    With ``free_mix`` (the release's form, for its checkpoints) the mix is two free weights instead:
    out = comb[0] * shortcut(x) + comb[1] * residual(x), comb initialised to (0.5, 0.5), unconstrained.
    """

    def __init__(self, neuron, cin: int, cout: int, stride: int, free_mix: bool = False):
        super().__init__()
        self.free_mix = free_mix
        self.bn1, self.act1 = nn.BatchNorm2d(cin), neuron()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.act2 = nn.BatchNorm2d(cout), neuron()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)
        if free_mix:
            self.comb = nn.Parameter(torch.full((2,), 0.5))
        else:
            self.mix_logit = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        residual = self.conv2(self.act2(self.bn2(self.conv1(pre))))
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        if self.free_mix:
            return self.comb[0] * shortcut + self.comb[1] * residual
        a = torch.sigmoid(self.mix_logit)
        return a * residual + (1 - a) * shortcut


def wrn_body(neuron, num_classes: int, in_channels: int, image_size: int, depth: int = 16,
             widen: int = 4, free_mix: bool = False) -> nn.Sequential:
    blocks_per_group = (depth - 4) // 6
    widths = [16 * widen, 32 * widen, 64 * widen]
    layers: list[nn.Module] = [nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)]
    cin = 16
    for group, width in enumerate(widths):
        for i in range(blocks_per_group):
            stride = 2 if group > 0 and i == 0 else 1
            layers.append(MixedResidualBlock(neuron, cin, width, stride, free_mix))
            cin = width
    layers += [nn.BatchNorm2d(cin), neuron(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


def wrn_release_body(neuron, num_classes: int, in_channels: int, image_size: int) -> nn.Sequential:
    """WRN-16-4 with the release's two free mixing weights per block (``wrn16_4_release``): what imported
    published checkpoints rebuild as (spikeguard import --format sr-release)."""
    return wrn_body(neuron, num_classes, in_channels, image_size, free_mix=True)
