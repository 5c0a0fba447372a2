"""Checkpoints: plain dicts of tensors and primitives, loadable with ``torch.load(weights_only=True)``.

Layout: {"format": "spikeguard-checkpoint", "version": 1, "arch": ModelSpec dict, "dataset": str,
"config": TrainConfig dict, "model": state_dict, "epoch": int, "val_accuracy": float,
"optimizer": ..., "scheduler": ...}. Written atomically (temporary file, fsync, rename) so a crash
mid-write leaves the previous file intact.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from spikeguard.errors import UserError
from spikeguard.models import ModelSpec, SpikingNet, create_model

FORMAT = "spikeguard-checkpoint"
VERSION = 1


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, or a UserError saying in one line why it is not one."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types on foreign or corrupt files; all mean "not one"
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(f"'{path}' is not a loadable spikeguard checkpoint ({type(e).__name__}: {detail[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"'{path}' is not a spikeguard checkpoint (no '{FORMAT}' marker)")
    if ckpt.get("version") != VERSION:
        raise UserError(f"'{path}' has checkpoint version {ckpt.get('version')}; this spikeguard reads {VERSION}")
    for key in ("arch", "model", "dataset"):
        if key not in ckpt:
            raise UserError(f"'{path}' lacks the '{key}' entry of a spikeguard checkpoint")
    return ckpt


def load_model(path: str | Path, expect_model: str | None = None,
               expect_dataset: str | None = None) -> tuple[SpikingNet, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights, after checking it is the expected
    architecture and data set."""
    ckpt = read_checkpoint(path)
    spec = ModelSpec.from_dict(ckpt["arch"])
    if expect_model is not None and spec.name != expect_model:
        raise UserError(f"checkpoint '{path}' holds a '{spec.name}' model, not '{expect_model}'")
    if expect_dataset is not None and ckpt["dataset"] != expect_dataset:
        raise UserError(f"checkpoint '{path}' was trained on '{ckpt['dataset']}', not '{expect_dataset}'")
    model = create_model(spec)
    mismatch = describe_mismatch(model.state_dict(), ckpt["model"])
    if mismatch:
        raise UserError(f"checkpoint '{path}' weights do not fit a '{spec.name}' model ({mismatch})")
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt


def describe_mismatch(expected: dict[str, torch.Tensor], found: Any) -> str:
    """'' if ``found`` is a state dict with exactly the expected keys and shapes, else a short reason."""
    if not isinstance(found, dict) or not all(isinstance(v, torch.Tensor) for v in found.values()):
        return "the 'model' entry is not a state dict of tensors"
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(found) if expected[k].shape != found[k].shape)
    parts = [f"{len(keys)} {what}, e.g. {keys[0]}" for what, keys in
             (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped)) if keys]
    return "; ".join(parts)
