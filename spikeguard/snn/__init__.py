"""Spiking core: neurons, encoders and the backward estimators every spiking layer reads."""

from spikeguard.snn.control import ann_twin, estimator, set_estimator, spiking_layers
from spikeguard.snn.encoders import ENCODERS, DirectEncoder, PoissonEncoder
from spikeguard.snn.estimators import (
    ESTIMATOR_FAMILIES,
    SURROGATES,
    Estimator,
    parse_estimator,
    rate_slope,
    spike,
)
from spikeguard.snn.neuron import IFNeuron

__all__ = [
    "ENCODERS", "ESTIMATOR_FAMILIES", "SURROGATES", "DirectEncoder", "Estimator", "IFNeuron",
    "PoissonEncoder", "ann_twin", "estimator", "parse_estimator", "rate_slope", "set_estimator", "spike",
    "spiking_layers",
]
