"""Checkpoints: plain dicts of tensors and primitives, loadable with ``torch.load(weights_only=True)``.

Layout (version 2): {"format": "spikeguard-checkpoint", "version": 2, "sha256": hex digest of every other
entry, "arch": ModelSpec dict, "dataset": str, "config": TrainConfig dict, "model": state_dict,
"epoch": completed epochs, "val_accuracy": float or None, "code_version": str}, and in the training
checkpoints (last.pt, last.1.pt, ...) also "step" (batches done in epoch "epoch" + 1), "order" (that
epoch's data order, or None), "optimizer", "scheduler", "rng" (Python, NumPy, torch CPU and CUDA
states), "generators" (the data-order generator "shuffle" and the defense's, "defense.<its name>") and
"progress" (metric sums, best accuracy, counters); spikeguard/training_state.py builds and restores them.
Older training checkpoints also hold "scaler" (always None), which is ignored. Version 1 files
(no checksum, no resume state) are still read for evaluation.

The checksum is stored inside the file rather than in a sidecar: a checkpoint copied or downloaded alone
still carries it, and no crash can leave a file and its sidecar disagreeing. It is a sha256 over a
canonical walk of the payload (keys, primitive values, each tensor's dtype, shape and bytes), so it
checks the content that is used, whatever the zip container around it.

Written atomically by spikeguard.files (temporary file, fsync, rename, fsync of the directory), so a crash
or a full disk mid-write leaves the previous file intact; a rotation renames the older files only once the
new one is complete.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from spikeguard.errors import UserError
from spikeguard.files import replace, write_temporary
from spikeguard.models import ModelSpec, SpikingNet, create_model
from spikeguard.rundir import BEST, LAST

FORMAT = "spikeguard-checkpoint"
VERSION = 2
READABLE_VERSIONS = (1, 2)

log = logging.getLogger(__name__)


def payload_digest(payload: dict[str, Any]) -> str:
    """sha256 over a canonical walk of ``payload`` without its "sha256" entry."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in payload.items() if k != "sha256"})
    return digest.hexdigest()


def _feed(digest, obj: Any) -> None:
    # Each item is tagged with its type and length, so different structures cannot hash alike.
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous()
        digest.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        digest.update(f"D{len(obj)};".encode())
        for key in sorted(obj, key=repr):  # state dicts mix int and str keys
            _feed(digest, key)
            _feed(digest, obj[key])
    elif isinstance(obj, (list, tuple)):  # one tag: a pickle round trip may turn one into the other
        digest.update(f"L{len(obj)};".encode())
        for item in obj:
            _feed(digest, item)
    elif isinstance(obj, (str, bytes)):
        data = obj.encode() if isinstance(obj, str) else obj
        digest.update(f"{'S' if isinstance(obj, str) else 'B'}{len(data)};".encode())
        digest.update(data)
    elif obj is None or isinstance(obj, (bool, int, float)):
        digest.update(f"{type(obj).__name__}:{obj!r};".encode())
    else:
        raise TypeError(f"checkpoints hold tensors and plain data only, not {type(obj).__name__}")


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` with the format marker, version and checksum, atomically."""
    path = Path(path)
    body = {"format": FORMAT, "version": VERSION, **payload}
    body["sha256"] = payload_digest(body)
    replace(write_temporary(path, lambda f: torch.save(body, f)), path)


def save_rotating(run_dir: Path, payload: dict[str, Any], keep: int) -> Path:
    """Write a training checkpoint as last.pt and keep the ``keep`` - 1 before it as last.1.pt, last.2.pt, ...
    (newest first). The new file is complete and fsynced before any rename, and every rename is atomic, so
    at any instant of a crash the newest finished checkpoint is among the last*.pt files."""
    run_dir = Path(run_dir)
    newest = run_dir / LAST
    body = {"format": FORMAT, "version": VERSION, **payload}
    body["sha256"] = payload_digest(body)
    tmp = write_temporary(newest, lambda f: torch.save(body, f))
    for i in range(keep - 1, 0, -1):
        older = run_dir / (LAST if i == 1 else f"last.{i - 1}.pt")
        if older.exists():
            os.replace(older, run_dir / f"last.{i}.pt")
    for stale in _rotated(run_dir):  # left by a larger keep_checkpoints
        if _rotation_index(stale) >= keep:
            stale.unlink()
    replace(tmp, newest)
    return newest


def _rotated(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.glob("last.*.pt") if re.fullmatch(r"last\.\d+\.pt", p.name)]


def _rotation_index(path: Path) -> int:
    return 0 if path.name == LAST else int(path.name.split(".")[1])


def training_checkpoints(run_dir: str | Path) -> list[Path]:
    """last.pt, last.1.pt, ... in ``run_dir``, newest name first."""
    run_dir = Path(run_dir)
    found = ([run_dir / LAST] if (run_dir / LAST).is_file() else []) + _rotated(run_dir)
    return sorted(found, key=_rotation_index)


def latest_resumable(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """The training checkpoint in ``run_dir`` furthest into training that loads and verifies. A damaged one
    is passed over with a log line naming it; none left is a UserError."""
    candidates, reasons = [], []
    for path in training_checkpoints(run_dir):
        try:
            ckpt = read_checkpoint(path)
        except UserError as e:
            log.warning("skipping %s: %s", path, e)
            reasons.append(str(e))
            continue
        if ckpt["version"] < 2 or "rng" not in ckpt:
            reasons.append(f"'{path}' is a version-{ckpt['version']} checkpoint: it can be evaluated but not "
                           "resumed (it lacks the random and data-order state)")
            continue
        candidates.append((ckpt["epoch"], ckpt["step"], path, ckpt))
    if not candidates:
        why = reasons[0] if reasons else f"no last.pt in '{run_dir}'"
        raise UserError(f"nothing to resume in '{run_dir}': {why}")
    *_, path, ckpt = max(candidates, key=lambda c: (c[0], c[1]))
    return path, ckpt


def read_checkpoint(path: str | Path, verify: bool = True) -> dict[str, Any]:
    """The checkpoint dict, or a UserError saying in one line why it is not one."""
    path = Path(path)
    if path.is_dir():
        path = path / BEST
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' does not exist")
    with open(path, "rb") as f:
        start = f.read(4)
    if not (start.startswith(b"PK\x03\x04") or start[:1] == b"\x80"):  # torch.save: a zip archive or a raw pickle
        raise UserError(f"'{path}' is not a checkpoint (a PyTorch .pt file such as a run's best.pt); give a run "
                        "directory or its best.pt")
    try:
        # weights_only: the unpickler builds tensors and plain containers only; any other global (a class,
        # a function such as os.system) is refused before it can run.
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols: one line, not three
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found is None and "global" not in str(e).lower():  # damaged, not dangerous
            raise UserError(f"'{path}' is not a loadable spikeguard checkpoint, perhaps truncated or damaged") from None
        what = f" (it references {found.group(1)})" if found else ""
        raise UserError(f"refusing to load '{path}': it holds pickled objects other than tensors and plain "
                        f"data{what}, which could run code") from None
    except Exception as e:  # noqa: BLE001 - torch.load raises many types on foreign, truncated or corrupt files
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(f"'{path}' is not a loadable spikeguard checkpoint, perhaps truncated "
                        f"({type(e).__name__}: {detail[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"'{path}' is not a spikeguard checkpoint (no '{FORMAT}' marker)")
    if ckpt.get("version") not in READABLE_VERSIONS:
        raise UserError(f"'{path}' has checkpoint version {ckpt.get('version')}; this spikeguard reads "
                        f"{', '.join(map(str, READABLE_VERSIONS))}")
    for key in ("arch", "model", "dataset"):
        if key not in ckpt:
            raise UserError(f"'{path}' lacks the '{key}' entry of a spikeguard checkpoint")
    if verify:
        verify_checksum(path, ckpt)
    return ckpt


def verify_checksum(path: str | Path, ckpt: dict[str, Any]) -> None:
    """A UserError unless a version-2 checkpoint's content matches its stored sha256 (version 1 has none)."""
    if ckpt["version"] < 2:
        return
    try:
        actual = payload_digest(ckpt)
    except TypeError as e:
        raise UserError(f"'{path}' is not a spikeguard checkpoint ({e})") from None
    if ckpt.get("sha256") != actual:
        raise UserError(f"'{path}' fails its checksum (stored {str(ckpt.get('sha256'))[:12]}, content "
                        f"{actual[:12]}): the file is damaged or was edited")


def load_model(path: str | Path, expect_model: str | None = None,
               expect_dataset: str | None = None) -> tuple[SpikingNet, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights, after checking it is the expected
    architecture and data set. The checksum is verified last, before the weights are loaded, so a file
    of the wrong model is named as such even when it was also edited."""
    ckpt = read_checkpoint(path, verify=False)
    if ckpt.get("arch") is None and ("model_fn" in ckpt or "model_class" in ckpt):  # trained by spikeguard.train
        if expect_model is not None:
            raise UserError(f"checkpoint '{path}' holds {model_name(ckpt)}, not a '{expect_model}' model")
        return _load_external(path, ckpt, expect_dataset)
    try:
        spec = ModelSpec.from_dict(ckpt["arch"])
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged or hand-made 'arch' entry
        raise UserError(f"checkpoint '{path}' has an unreadable 'arch' entry ({type(e).__name__})") from None
    if expect_model is not None and spec.name != expect_model:
        raise UserError(f"checkpoint '{path}' holds a '{spec.name}' model, not '{expect_model}'")
    if expect_dataset is not None and ckpt["dataset"] != expect_dataset:
        raise UserError(f"checkpoint '{path}' was trained on '{ckpt['dataset']}', not '{expect_dataset}'")
    model = create_model(spec)
    mismatch = describe_mismatch(model.state_dict(), ckpt["model"])
    if mismatch:
        raise UserError(f"checkpoint '{path}' weights do not fit a '{spec.name}' model ({mismatch})")
    verify_checksum(path, ckpt)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt


def model_name(ckpt: dict[str, Any]) -> str:
    """The architecture a checkpoint holds, or for a network trained by spikeguard.train its model
    function (or class)."""
    return (ckpt.get("arch") or {}).get("name") or ckpt.get("model_fn") or ckpt.get("model_class") or "model"


def _load_external(path: str | Path, ckpt: dict[str, Any], expect_dataset: str | None) -> tuple[Any, dict[str, Any]]:
    """A checkpoint of a model built outside spikeguard: rebuilt from its model function (spikeguard.external)."""
    from spikeguard.external import rebuild

    if expect_dataset is not None and ckpt["dataset"] != expect_dataset:
        raise UserError(f"checkpoint '{path}' was trained on '{ckpt['dataset']}', not '{expect_dataset}'")
    model = rebuild(ckpt, str(path))
    mismatch = describe_mismatch(model.state_dict(), ckpt["model"])
    if mismatch:
        raise UserError(f"checkpoint '{path}' weights do not fit what '{ckpt['model_fn']}' builds now ({mismatch})")
    verify_checksum(path, ckpt)
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


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
