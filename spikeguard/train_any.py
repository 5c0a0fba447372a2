"""``spikeguard.train``: train any ``nn.Module`` (SpikingJelly, snnTorch, spikeguard, plain PyTorch) with any
registered defense, through the same loop as ``spikeguard train`` (spikeguard/training.py): SGD with a
cosine schedule, validation each epoch, metrics.jsonl, rotating checkpoints, best.pt, resume.

    result = spikeguard.train(MyCSNN(), "digits", defense="sr", lamb=0.01, epochs=5, out="runs/sr")
    result = spikeguard.train("my_package.nets:csnn", "digits", defense="sr", ...)

Library neurons are reset before every forward pass (the library's own way, spikeguard.adapters), so no
state leaks from one batch or one penalty evaluation into the next. A model given as
``package.module:function`` is rebuilt from it by ``spikeguard.load`` and ``spikeguard evaluate``; its
checkpoints record the function and the sha256 of its module's source. A module given as an object is
trained in place; its checkpoints record its class (load its weights into a fresh instance yourself).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from spikeguard.errors import UserError


def train(model: nn.Module | str, data: Any = "digits", defense: str | None = None, *, lamb: float | None = None,
          epochs: int | None = None, out: str | Path | None = None, resume: bool = False, progress: bool | None = None,
          **settings: Any):
    """Train ``model`` on ``data`` with ``defense``; returns a ``TrainResult`` (run_dir, model with the
    best-on-validation weights, best_val_accuracy, best_epoch, seconds).

    * ``model``: an ``nn.Module`` mapping images in [0, 1] to logits (trained in place), a
      ``"package.module:function"`` building one, or a registered architecture's name (``"digits_cnn"``).
    * ``data``: a data set's name (``"digits"``, ``"cifar10"``, ...) or a ``spikeguard.data.DataSplits``.
    * ``defense``: any registered defense (``vanilla``, the default, ``sr``, ``sr_star``, ``at``, ``rat``,
      ``gr``, ...); ``lamb`` its penalty weight (on digits the validated one by default).
    * ``out``: the new run directory (None: a fresh temporary one); ``resume=True`` continues the run in
      ``out`` from its newest checkpoint with its own settings (``epochs`` may raise the total; a setting
      given that differs from the run's is refused).
    * ``settings``: any other training field (``eps``, ``h``, ``steps``, ``batch_size``, ``lr``, ``seed``,
      ``device``, ``checkpoint_every``, ...), as ``spikeguard train`` flags name them, with underscores.
    * ``progress``: a line per epoch on stderr (None: when stderr is a terminal).
    """
    from spikeguard import training

    progress = sys.stderr.isatty() if progress is None else bool(progress)
    given = model if isinstance(model, nn.Module) else None
    if given is None and not isinstance(model, str):
        raise UserError(f"model must be an nn.Module, 'package.module:function' or an architecture's name, "
                        f"not {type(model).__name__}")
    splits = None if isinstance(data, str) else _splits(data)
    if resume:
        if out is None:
            raise UserError("resume=True continues the run in out: give out")
        dataset = data if isinstance(data, str) or splits is None else splits.name
        _same_as_run(Path(out), {"dataset": dataset, "defense": defense, "lamb": lamb, **settings})
        return training.resume(out, epochs=epochs, progress=progress, data=splits, model=given,
                               **{k: v for k, v in settings.items() if k in training.RESUME_FIELDS})
    named = None if given is not None else str(model)  # a model function or an architecture's name
    cfg = _config(named, splits.name if splits is not None else data, defense or "vanilla", lamb, epochs, settings)
    out = Path(tempfile.mkdtemp(prefix="spikeguard-run-")) if out is None else Path(out)
    return training.train(cfg, out, progress=progress, data=splits, model=given)


def _config(model: str | None, dataset: str, defense: str, lamb: float | None, epochs: int | None,
            settings: dict[str, Any]):
    from spikeguard.config import config_from_dict, validated_lamb

    values: dict[str, Any] = {"dataset": dataset, "defense": defense, **settings}
    if model is not None:
        values["model_fn" if ":" in model else "model"] = model
    if epochs is not None:
        values["epochs"] = epochs
    if lamb is None:
        lamb = validated_lamb(dataset, defense, settings.get("network", "snn"))
    if lamb is not None:
        values["lamb"] = lamb
    return config_from_dict(values).resolved()


def _same_as_run(out: Path, given: dict[str, Any]) -> None:
    """A resumed run keeps its settings: one given that differs from its config.yaml is refused."""
    from spikeguard.config import config_from_dict
    from spikeguard.rundir import existing_run_dir, read_config
    from spikeguard.training import RESUME_FIELDS

    run = config_from_dict(read_config(existing_run_dir(out)))
    given = {k: v for k, v in given.items() if v is not None and k not in RESUME_FIELDS}
    changed = {k for k, v in config_from_dict(given, base=run).to_dict().items() if getattr(run, k) != v}
    if changed:
        raise UserError(f"resume=True continues the run in '{out}' with its own settings; "
                        f"{', '.join(sorted(changed))} cannot change (allowed: {', '.join(RESUME_FIELDS)})")


def _splits(data: Any):
    from spikeguard.data import DataSplits

    if isinstance(data, DataSplits):
        return data
    raise UserError("data must be a data set's name (e.g. 'digits') or a spikeguard.data.DataSplits")
