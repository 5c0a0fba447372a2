"""A small spiking CNN for the embedded 8x8 digits data set: fast enough to train in seconds on a CPU.

It takes any square image size (two size-preserving convolutions, one 2x2 pooling), so it also serves
mnist5k's 28x28 digits; at 8x8 its layers and parameter shapes are what digits checkpoints hold."""

from __future__ import annotations

from torch import nn

from spikeguard.models.base import conv_bn


def digits_cnn_body(neuron, num_classes: int, in_channels: int, image_size: int) -> nn.Sequential:
    pooled = image_size // 2
    return nn.Sequential(
        *conv_bn(in_channels, 16), neuron(),
        *conv_bn(16, 32), neuron(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * pooled * pooled, 64), nn.BatchNorm1d(64), neuron(),
        nn.Linear(64, num_classes),
    )
