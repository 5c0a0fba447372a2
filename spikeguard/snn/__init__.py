"""Spiking core: neurons, encoders and the backward estimators every spiking layer reads.

The public names load on first use (PEP 562), so ``spikeguard.snn.registry`` (names, widths and kinds of
estimators and encoders) is importable without PyTorch."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from spikeguard.registry import lazy_exports

_EXPORTS = {
    "ann_twin": "control", "estimator": "control", "is_spiking": "control", "set_estimator": "control",
    "spiking_layers": "control",
    "DirectEncoder": "encoders", "FramesEncoder": "encoders", "PoissonEncoder": "encoders",
    "ENCODERS": "registry", "ESTIMATORS": "registry", "ESTIMATOR_FAMILIES": "registry", "Estimator": "registry",
    "parse_estimator": "registry", "register_estimator": "registry", "unregister_estimator": "registry",
    "PDSG_SIGMA_FLOOR": "estimators", "SURROGATES": "estimators", "membrane_sigma": "estimators",
    "rate_slope": "estimators", "spike": "estimators",
    "IFNeuron": "neuron",
}
_DYNAMIC = {"ESTIMATOR_FAMILIES", "SURROGATES"}  # follow registrations: looked up afresh every time

__all__ = sorted(_EXPORTS)


def _read_afresh(name: str) -> Callable[[], Any]:
    """A dynamic name's value, read from its module at each access (a registration changes it)."""
    return lambda: getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


__getattr__, __dir__ = lazy_exports(
    globals(), {name: f"{__name__}.{module}" for name, module in _EXPORTS.items() if name not in _DYNAMIC},
    dynamic={name: _read_afresh(name) for name in _DYNAMIC})
