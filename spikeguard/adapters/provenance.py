"""What an evaluation records of an external model: the libraries and versions, neuron classes, weights."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from spikeguard.adapters.library import external_neurons, library_of


def library_facts(model: nn.Module) -> dict | None:
    """The SNN libraries an external model uses (name and version), its neuron classes and a sha256 of its
    weights (every state_dict tensor, in key order); None for a model without library modules."""
    from importlib.metadata import PackageNotFoundError, version

    used = sorted({lib.name for m in model.modules() if (lib := library_of(m)) is not None})
    if not used:
        return None
    versions: dict[str, str | None] = {}
    for name in used:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {"libraries": versions,
            "neuron_classes": sorted({n.class_name for n in external_neurons(model)}),
            "weights_sha256": weights_sha256(model)}


def weights_sha256(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        t = tensor.detach().cpu().contiguous()
        digest.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
