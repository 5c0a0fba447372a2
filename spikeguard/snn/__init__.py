"""Spiking core: neurons, encoders and the backward estimators every spiking layer reads."""

from spikeguard.snn.control import ann_twin, estimator, set_estimator, spiking_layers
from spikeguard.snn.encoders import ENCODERS, DirectEncoder, FramesEncoder, PoissonEncoder
from spikeguard.snn.estimators import (
    ESTIMATOR_FAMILIES,
    PDSG_SIGMA_FLOOR,
    SURROGATES,
    Estimator,
    membrane_sigma,
    parse_estimator,
    rate_slope,
    spike,
)
from spikeguard.snn.neuron import IFNeuron

__all__ = [
    "ENCODERS", "ESTIMATOR_FAMILIES", "PDSG_SIGMA_FLOOR", "SURROGATES", "DirectEncoder", "Estimator",
    "FramesEncoder", "IFNeuron", "PoissonEncoder", "ann_twin", "estimator", "membrane_sigma", "parse_estimator", "rate_slope",
    "set_estimator", "spike", "spiking_layers",
]
