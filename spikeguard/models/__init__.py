"""Models: a registry of spiking networks (digits CNN, DVS CNN, VGG-11, WRN-16-4) and their ANN twins.

The public names load on first use (PEP 562), so ``spikeguard.models.registry`` (names and facts) is
importable without PyTorch."""

from __future__ import annotations

from spikeguard.registry import lazy_exports

_EXPORTS = {"MODELS": "spikeguard.models.registry", "ModelSpec": "spikeguard.models.registry",
            "create_model": "spikeguard.models.registry", "SpikingNet": "spikeguard.models.base",
            "ann_twin": "spikeguard.snn.control"}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
