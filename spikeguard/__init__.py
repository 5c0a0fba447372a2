"""spikeguard: train adversarially robust spiking neural networks and evaluate them honestly.

``spikeguard.evaluate`` and ``spikeguard.load`` (spikeguard/api.py) load on first use: ``import spikeguard``
alone does not import PyTorch."""

__version__ = "0.1.0"

_API = {"evaluate": "spikeguard.api", "load": "spikeguard.api", "Result": "spikeguard.api"}


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'spikeguard' has no attribute {name!r}")
