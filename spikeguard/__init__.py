"""spikeguard: train adversarially robust spiking neural networks and evaluate them honestly.

The public API (docs/api.md) loads on first use: ``import spikeguard`` alone does not import PyTorch.

* ``spikeguard.evaluate(model, data, suite, eps, n)`` -> ``Result``; ``spikeguard.load(path)`` -> model
  (spikeguard/api.py);
* ``spikeguard.train(model, data, defense, ...)`` -> ``TrainResult`` for any nn.Module (train_any.py);
* ``spikeguard.attacks``: attack objects, one per registered attack kind (``spikeguard.attacks.PGD``).
"""

__version__ = "0.1.0"

_API = {"evaluate": "spikeguard.api", "load": "spikeguard.api", "Result": "spikeguard.api",
        "train": "spikeguard.train_any", "TrainResult": "spikeguard.training"}
_SUBPACKAGES = ("attacks",)

__all__ = sorted([*_API, *_SUBPACKAGES])


def __getattr__(name: str):
    import importlib

    if name in _API:
        value = globals()[name] = getattr(importlib.import_module(_API[name]), name)
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'spikeguard' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
