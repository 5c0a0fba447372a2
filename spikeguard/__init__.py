"""spikeguard: train adversarially robust spiking neural networks and evaluate them honestly."""

__version__ = "0.1.0"
