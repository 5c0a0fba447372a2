"""Spiking VGG-11 as in the SR paper's release: every conv followed by BatchNorm and a spiking neuron,
average pooling, and a spiking 3-layer classifier (8192 -> 4096 -> 4096 -> classes for 32x32 input)."""

from __future__ import annotations

from torch import nn

from spikeguard.models.base import conv_bn

VGG11_LAYOUT = (64, "pool", 128, 256, "pool", 512, 512, 512, "pool", 512, 512)


def vgg11_body(neuron, num_classes: int, in_channels: int, image_size: int, width: int = 4096) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels, size = in_channels, image_size
    for item in VGG11_LAYOUT:
        if item == "pool":
            layers.append(nn.AvgPool2d(2))
            size //= 2
        else:
            assert isinstance(item, int)  # the layout holds widths and 'pool'
            layers += [*conv_bn(channels, item), neuron()]
            channels = item
    layers += [
        nn.Flatten(),
        nn.Linear(channels * size * size, width), neuron(),
        nn.Linear(width, width), neuron(),
        nn.Linear(width, num_classes),
    ]
    return nn.Sequential(*layers)
