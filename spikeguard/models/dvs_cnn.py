"""A small spiking CNN for event frames (2 polarity channels): the CIFAR10-DVS model for tests and quick
runs. The paper's CIFAR10-DVS model is VGG-11 (spikeguard.models.vgg) on 2 x 48 x 48 frames, T = 10."""

from __future__ import annotations

from torch import nn

from spikeguard.models.base import conv_bn


def dvs_cnn_body(neuron, num_classes: int, in_channels: int, image_size: int) -> nn.Sequential:
    size = image_size // 4
    return nn.Sequential(
        *conv_bn(in_channels, 16), neuron(),
        nn.AvgPool2d(2),
        *conv_bn(16, 32), neuron(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * size * size, num_classes),
    )
