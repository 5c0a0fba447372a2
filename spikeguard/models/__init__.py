"""Models: a registry of spiking networks (digits CNN, VGG-11, WRN-16-4) and their ANN twins."""

from spikeguard.models.base import SpikingNet
from spikeguard.models.registry import DEFAULT_MODEL, MODELS, ModelSpec, create_model
from spikeguard.snn import ann_twin

__all__ = ["DEFAULT_MODEL", "MODELS", "ModelSpec", "SpikingNet", "ann_twin", "create_model"]
