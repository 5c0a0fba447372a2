"""Models: a registry of spiking networks (digits CNN, DVS CNN, VGG-11, WRN-16-4) and their ANN twins.

The public names load on first use (PEP 562), so ``spikeguard.models.registry`` (names and facts) is
importable without PyTorch."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"MODELS": "spikeguard.models.registry", "ModelSpec": "spikeguard.models.registry",
            "create_model": "spikeguard.models.registry", "SpikingNet": "spikeguard.models.base",
            "ann_twin": "spikeguard.snn.control"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = getattr(importlib.import_module(_EXPORTS[name]), name)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
