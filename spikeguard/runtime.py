"""Where and how code runs: the device, a model's train/eval state, and private random streams.

These helpers are used by training, evaluation and analysis alike, so they live below all three: no module
reaches into the training loop (or into the attacks) for them. The configurations check a device name here
before PyTorch is imported, so torch is imported by the functions that use it, not by this module.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from spikeguard.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d{1,3})?")


def check_device(name: object) -> str:
    """``name`` if it is a device spikeguard runs on (auto, cpu, cuda or cuda:N), else a one-line UserError.
    The one check of a device name: the training and evaluation configs and pick_device use it."""
    if not isinstance(name, str) or not DEVICE_NAME.fullmatch(name):
        raise UserError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return name


def pick_device(name: str) -> torch.device:
    """``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:N``; UserError for anything else."""
    import torch

    if check_device(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but no CUDA device is available")
    return device


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """BatchNorm and dropout in eval mode for the block, then every module's own mode restored.
    The spiking layers' backward estimator is untouched, so gradients still flow through spikes."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def cuda_devices(device: torch.device | str | None) -> list[int]:
    """The CUDA device indices whose generators a fork must cover for work on ``device``."""
    import torch

    if device is None:
        return []
    device = torch.device(device)
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@contextlib.contextmanager
def forked_rng(device: torch.device | str | None = None, seed: int | None = None) -> Iterator[None]:
    """torch's global generators (CPU, and ``device``'s when it is a GPU), Python's ``random`` and NumPy's
    global generator forked for the block, each seeded from ``seed`` when given: randomness inside is
    reproducible and the caller's random state is left as it was. Libraries that reseed the global
    generator (AutoAttack) and stochastic models draw from them; a model randomised through ``random`` or
    NumPy is as reproducible as one drawing from torch."""
    import random

    import torch

    python_state = random.getstate()
    numpy = _numpy()
    numpy_state = numpy.random.get_state() if numpy is not None else None
    try:
        with torch.random.fork_rng(devices=cuda_devices(device)):
            if seed is not None:
                torch.manual_seed(seed)
                random.seed(seed)
                if numpy is not None:
                    numpy.random.seed(seed % 2**32)  # NumPy takes seeds below 2**32
            yield
    finally:
        random.setstate(python_state)
        if numpy is not None:
            numpy.random.set_state(numpy_state)


def _numpy():
    """NumPy when installed (torch runs without it), else None."""
    try:
        import numpy
    except ImportError:
        return None
    return numpy
