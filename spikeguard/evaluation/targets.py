"""What an evaluation attacks: a spikeguard checkpoint or an external model, its test data, and an
optional transfer source. Every mismatch is a one-line UserError before any attack runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spikeguard.checkpoint import load_model, model_name
from spikeguard.data import DATASETS, load_dataset
from spikeguard.errors import UserError
from spikeguard.external import load_external, wrap_external
from spikeguard.provenance import file_sha256
from spikeguard.rundir import BEST, load_splits


@dataclass
class Target:
    model: nn.Module
    name: str            # the model's name (architecture, or the model function)
    dataset: str
    test: Any            # the test split: a sequence of (input, label)
    num_classes: int
    eps: float | None    # the training eps, when the checkpoint records one
    checkpoint: str      # path or model function
    checkpoint_sha256: str | None
    frame_range: int | None = None  # event data: the events per bin that a frame value of 1 stands for
    model_fn: str | None = None     # an external model: the "package.module:function" that built it
    train: Any = None               # the training split: the escalation trains its substitute on it
    imported: dict | None = None    # an imported published checkpoint: its origin and how it was selected
    epoch: int | None = None        # the epochs trained into the checkpoint (it may be a run still training)

    @classmethod
    def of(cls, model: nn.Module, test, num_classes: int, *, name: str = "model", dataset: str = "custom",
           eps: float | None = None, frame_range: int | None = None, train=None) -> Target:
        """A model held in memory and its test data (any sequence of (input, label)): the Python API's way
        to evaluate without a checkpoint file."""

        # SpikingJelly / snnTorch models: neuron state reset before every forward pass
        return cls(wrap_external(model), name, dataset, test, num_classes, eps,
                   f"<in-memory {type(model).__name__}>", None, frame_range, train=train)


def load_target(checkpoint: Path | None, model_fn: str | None, dataset: str | None, expect_model: str | None,
                data_dir: str | None, download: bool) -> Target:
    if (checkpoint is None) == (model_fn is None):
        raise UserError("give either a run directory / checkpoint or --model-fn package.module:function")
    if model_fn is not None:
        if dataset is None:
            raise UserError(f"--model-fn needs --dataset ({', '.join(DATASETS)})")
        data = load_dataset(dataset, data_dir, download, augment=False)
        model = load_external(model_fn)
        _check_outputs(model, data, f"the model of {model_fn}")
        return Target(model, model_fn, dataset, data.test, data.num_classes, None, model_fn, None, data.frame_range,
                      model_fn, data.train)
    assert checkpoint is not None  # exactly one of checkpoint and model_fn, checked above
    net, ckpt = load_model(checkpoint, expect_model=expect_model, expect_dataset=dataset)
    cfg = ckpt.get("config", {})
    data = load_splits(ckpt, data_dir, download)
    path = Path(checkpoint) / BEST if Path(checkpoint).is_dir() else Path(checkpoint)
    name = model_name(ckpt)
    return Target(net, name, ckpt["dataset"], data.test, data.num_classes, cfg.get("eps"), str(path),
                  file_sha256(path), data.frame_range, ckpt.get("model_fn"), train=data.train,
                  imported=cfg.get("imported"), epoch=ckpt.get("epoch"))


def load_source(source: str, target: Target) -> nn.Module:
    """A transfer source: a spikeguard checkpoint (SNN) or ``package.module:function`` (any model, e.g. an
    ANN); it must be trained on the target's data set."""
    if Path(source).exists():
        model, ckpt = load_model(source)
        if ckpt["dataset"] != target.dataset:
            raise UserError(f"--source '{source}' was trained on '{ckpt['dataset']}', the target on '{target.dataset}'")
        return model
    if ":" in source:
        model = load_external(source)
        _check_outputs(model, None, f"--source {source}", target)
        return model
    raise UserError(f"--source '{source}' is neither an existing checkpoint nor package.module:function")


@torch.no_grad()
def _check_outputs(model: nn.Module, data, what: str, target: Target | None = None) -> None:
    test: Any = data.test if data is not None else target.test if target is not None else None
    classes = data.num_classes if data is not None else target.num_classes if target is not None else None
    x = test[0][0][None]
    expected = 1
    try:
        out = model(x)
    except Exception as e:  # a foreign model: any failure on our input means it does not fit the data set
        # unless it needs company (BatchNorm on batch statistics): the batch-dependence probe names the cause
        out, expected = _pair_output(model, test), 2
        if out is None:
            raise UserError(f"{what} fails on a {tuple(x.shape)} input ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(out, torch.Tensor) or out.shape != (expected, classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        images = "one image" if expected == 1 else "two images"
        raise UserError(f"{what} returns {shape} for {images}, not logits of shape ({expected}, {classes})")


def _pair_output(model: nn.Module, test) -> Any:
    """The model's output for the first two test inputs as one batch (where a batch of one failed), or None
    when that fails too."""
    if len(test) < 2:
        return None
    try:
        return model(torch.stack([test[0][0], test[1][0]]))
    except Exception:  # a foreign model: any failure here is reported on the single input
        return None
