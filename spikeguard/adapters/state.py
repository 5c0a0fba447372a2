"""Library neuron state: kept as found around a block, or cleared before every forward pass."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from spikeguard.adapters.library import library_of, reset_state, uses_library


def _snapshot(model: nn.Module) -> list[tuple[nn.Module, dict, dict, dict]]:
    saved = []
    for module in model.modules():
        if library_of(module) is None:
            continue
        plain = {k: module.__dict__[k] for k in ("v_seq", "reset") if k in module.__dict__}
        saved.append((module, dict(getattr(module, "_memories", {})), dict(module._buffers), plain))
    return saved


def _restore(saved) -> None:
    for module, memories, buffers, plain in saved:
        if hasattr(module, "_memories"):
            module._memories.clear()
            module._memories.update(memories)
        module._buffers.clear()
        module._buffers.update(buffers)
        module.__dict__.update(plain)


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """The neuron state of ``model`` as it was before the block, also when the block raises."""
    saved = _snapshot(model)
    try:
        yield
    finally:
        _restore(saved)


class Resetting(nn.Module):
    """``model`` with its neuron state cleared before every forward pass (parameters shared)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        reset_state(self.model)
        return self.model(*args, **kwargs)


@contextlib.contextmanager
def stateless(model: nn.Module) -> Iterator[nn.Module]:
    """A view of ``model`` whose every forward pass starts from a clean neuron state; on exit the model's
    state is what it was on entry. Models without library neurons are yielded unchanged."""
    if not uses_library(model):
        yield model
        return
    with preserved_state(model):
        yield Resetting(model)
