"""Data sets for spikeguard: `load_dataset(name, ...)` returns train/val/test splits.

Images are float32 C x H x W tensors in [0, 1]; the model normalises them with
the `mean`/`std` carried in `DataSplits`. See `digits.py` and `cifar.py` for
where each data set comes from and exactly how it is split.
"""

from __future__ import annotations

from spikeguard.data.cifar import load_cifar
from spikeguard.data.cifar10_dvs import load_cifar10_dvs
from spikeguard.data.digits import load_digits
from spikeguard.data.splits import DataSplits, stack
from spikeguard.errors import UserError

__all__ = ["DATASETS", "DataSplits", "load_dataset", "stack"]

DATASETS: tuple[str, ...] = ("digits", "cifar10", "cifar100", "cifar10dvs")


def load_dataset(
    name: str,
    data_dir: str | None = None,
    download: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
    augment: bool = True,
    dvs: dict | None = None,
) -> DataSplits:
    """Load data set `name` split into train / val / test.

    `data_dir` (default "./data"), `download`, `val_fraction` and `augment`
    apply to CIFAR only: digits ships with scikit-learn, has a fixed
    60/20/20 split that depends only on `seed`, and is never augmented.
    "cifar10dvs" (event frames, see cifar10_dvs.py) also takes `dvs`, the
    config's `dvs:` mapping of frame and augmentation options.
    """
    if name == "digits":
        return load_digits(seed=seed)
    if name in ("cifar10", "cifar100"):
        return load_cifar(
            name, data_dir=data_dir, download=download, val_fraction=val_fraction, seed=seed, augment=augment
        )
    if name == "cifar10dvs":
        return load_cifar10_dvs(data_dir=data_dir, val_fraction=val_fraction, seed=seed, augment=augment, dvs=dvs)
    raise UserError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
