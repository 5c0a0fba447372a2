"""A training run's state, and the training checkpoint payload built from it and restored into it.

``RunState`` holds a run's live objects and where it stands. ``capture`` turns it into the payload of a
training checkpoint (the layout spikeguard.checkpoint documents), ``restore`` puts a payload back into a
freshly built run, so that on CPU a run killed at any point and resumed ends bit for bit where an
uninterrupted run ends (docs/reliability.md). ``describe`` is what every checkpoint, best.pt included,
carries besides its weights.

The payload's keys and the names of the generators in it are the checkpoint format: a renamed one would
stop older runs from resuming.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spikeguard.config import TrainConfig
from spikeguard.data import DataSplits
from spikeguard.defenses import Defense
from spikeguard.errors import UserError
from spikeguard.models import ModelSpec, SpikingNet
from spikeguard.provenance import code_version
from spikeguard.speed import SpeedOptions

log = logging.getLogger(__name__)


def drop_last(n: int, batch_size: int) -> bool:
    return n > batch_size


@dataclass
class RunState:
    """A run's live objects and where it stands: what a training checkpoint saves and restores."""

    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    data: DataSplits
    spec: ModelSpec | None                  # None: a model built outside spikeguard (facts says which)
    model: SpikingNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.CosineAnnealingLR
    defense: Defense
    shuffle: torch.Generator                # draws each epoch's data order
    epoch: int = 0                          # completed epochs
    step: int = 0                           # batches done in epoch `epoch + 1`, skipped ones included
    order: torch.Tensor | None = None       # the data order of epoch `epoch + 1`, once drawn
    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # metric sums of this epoch, on the device
    taken: int = 0                          # optimiser steps taken this epoch
    skipped: int = 0                        # steps skipped this epoch (nan_policy skip)
    skips_in_a_row: int = 0
    rollbacks: int = 0
    val_accuracy: float | None = None       # of the last completed epoch
    best_acc: float = -1.0
    best_epoch: int = -1
    seconds: float = 0.0                    # training time spent before this process took over
    clock: float = field(default_factory=time.perf_counter)  # perf_counter() when this process took over
    # loss(x, y) of the defense on the model as the speed options prepared it, inside DDP under torchrun
    objective: torch.nn.Module | None = None
    options: SpeedOptions = field(default_factory=SpeedOptions)
    # a model not built from a ModelSpec (spec None): what its checkpoints record of it (model_fn and the
    # sha256 of its module's source, or the class of a module given as an object)
    facts: dict[str, Any] = field(default_factory=dict)

    def elapsed(self) -> float:
        return self.seconds + time.perf_counter() - self.clock

    def steps_per_epoch(self) -> int:
        n, b = len(self.data.train), self.cfg.batch_size
        return n // b if drop_last(n, b) else math.ceil(n / b)


# ---- the payload --------------------------------------------------------------------------------------

def describe(state: RunState) -> dict[str, Any]:
    """What every checkpoint of the run carries besides its weights."""
    return {"arch": state.spec.to_dict() if state.spec is not None else None, "dataset": state.cfg.dataset,
            "config": state.cfg.to_dict(), "epoch": state.epoch, "val_accuracy": state.val_accuracy,
            "code_version": code_version(), **state.facts}


def capture(state: RunState) -> dict[str, Any]:
    """The training checkpoint payload: everything restore() needs to continue bit for bit."""
    return {**describe(state), "model": state.model.state_dict(), "step": state.step, "order": state.order,
            "optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
            "rng": rng_states(state.device),
            "generators": {name: g.get_state() for name, g in generators(state).items()},
            "progress": {"sums": {k: v.detach().to("cpu") for k, v in state.sums.items()}, "taken": state.taken,
                         "skipped": state.skipped, "skips_in_a_row": state.skips_in_a_row,
                         "rollbacks": state.rollbacks, "best_val_accuracy": state.best_acc,
                         "best_epoch": state.best_epoch, "seconds": state.elapsed(),
                         "threads": torch.get_num_threads()}}


def snapshot(state: RunState) -> dict[str, Any]:
    """capture() copied to the CPU: a payload that the run's further steps cannot change."""
    return _cpu_copy(capture(state))


def restore(state: RunState, ckpt: dict[str, Any]) -> None:
    """Load a training checkpoint (from capture()) into a freshly built run. The "scaler" entry of older
    checkpoints (always None: no run used a GradScaler) is ignored."""
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_states(ckpt["rng"], state.device)
    for name, generator in generators(state).items():
        if name not in ckpt["generators"]:
            raise UserError(f"the checkpoint lacks the state of the '{name}' generator; it belongs to another defense")
        generator.set_state(ckpt["generators"][name])
    state.epoch, state.step, state.order = ckpt["epoch"], ckpt["step"], ckpt["order"]
    state.val_accuracy = ckpt["val_accuracy"]
    p = ckpt["progress"]
    state.sums = {k: v.to(state.device) for k, v in p["sums"].items()}
    state.taken, state.skipped, state.skips_in_a_row = p["taken"], p["skipped"], p["skips_in_a_row"]
    state.rollbacks, state.best_acc, state.best_epoch = p["rollbacks"], p["best_val_accuracy"], p["best_epoch"]
    state.seconds, state.clock = p["seconds"], time.perf_counter()
    if p["threads"] != torch.get_num_threads():
        log.warning("the run used %d threads and this process %d: the result will not be bitwise the same as an "
                    "uninterrupted run (torch.set_num_threads)", p["threads"], torch.get_num_threads())


# ---- random state ------------------------------------------------------------------------------------

def generators(state: RunState) -> dict[str, torch.Generator]:
    """The run's private generators: "shuffle" (the data order) and the defense's own (PGD random starts,
    RAT's rows), each under "defense." and the name the defense gives it."""
    found = {"shuffle": state.shuffle}
    for name, generator in sorted(state.defense.generators().items()):
        found[f"defense.{name}"] = generator
    return found


def rng_states(device: torch.device) -> dict[str, Any]:
    """The global generators as tensors and plain data (loadable with weights_only)."""
    np_state = np.random.get_state(legacy=False)
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                      "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                      "gauss": float(np_state["gauss"])},
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if device.type == "cuda" and states["cuda"] is not None:
        torch.cuda.set_rng_state(states["cuda"], device)


def _cpu_copy(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return copy.copy(obj)
