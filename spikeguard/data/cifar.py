"""CIFAR-10 and CIFAR-100, read from the official "python version" files.

Expected layout (what the official archives unpack to):
    <data_dir>/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch
    <data_dir>/cifar-100-python/train, test
Each file is a pickle of a dict with bytes keys: b"data" (uint8, N x 3072,
each row one 3x32x32 image, channel-first) and b"labels" (CIFAR-10) or
b"fine_labels" (CIFAR-100), among others we ignore.

We read the files ourselves rather than with torchvision.datasets.CIFAR10,
because torchvision checks each file's MD5 against the official release and so
refuses any other files (such as the small ones the tests write). torchvision
is used only to download and unpack the archives when `download=True`.

Pickle can run arbitrary code, so the files are read with an unpickler that
only allows the few globals a CIFAR file needs to rebuild numpy arrays.

Splits: `val_fraction` of the 50,000 training images, chosen by a permutation
seeded with `seed`, form the validation set; the rest is the training set; the
official test set is the test set. Only the training set is augmented
(random 32x32 crop of the 4-pixel zero-padded image, and random horizontal flip).
`indices` on train/val are positions in the original training set, on test
positions in the official test set.
"""

from __future__ import annotations

import codecs
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spikeguard.data.splits import DataSplits, ImageDataset, check_val_fraction, split_train_val
from spikeguard.errors import UserError, one_line

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]  # same function, old home


@dataclass(frozen=True)
class _CifarSpec:
    title: str  # for messages
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


_SPECS = {
    "cifar10": _CifarSpec(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key="labels",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": _CifarSpec(
        title="CIFAR-100",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        label_key="fine_labels",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}

IMAGE_SIZE = 32
PIXELS_PER_IMAGE = 3 * IMAGE_SIZE * IMAGE_SIZE


def _latin1_encode(text, encoding="latin1"):
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(str, "latin1").
    # Allow exactly that, not arbitrary codecs.
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"unexpected _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


# Everything a CIFAR pickle may reference; anything else is refused.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # files written with numpy 1.x (the real ones)
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # files written with numpy 2.x
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,  # bytes in protocol-2 pickles written by Python 3
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path) -> None:
        # encoding="bytes": the real files were written by Python 2, whose str is bytes.
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UserError(
                f"refusing to load '{self._path}': it references {module}.{name}, "
                "which a CIFAR data file never contains"
            ) from None


def _read_batch(path: Path, spec: _CifarSpec) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR batch file into (uint8 N x 3072 data, int64 N labels)."""
    try:
        with open(path, "rb") as f:
            batch = _RestrictedUnpickler(f, path).load()
    except UserError:
        raise
    except Exception as e:  # any unpickling failure means a damaged file
        raise UserError(f"cannot read '{path}': corrupt or truncated {spec.title} file ({one_line(e)})") from e
    if not isinstance(batch, dict):
        raise UserError(f"'{path}' is not a {spec.title} file: expected a dict, got {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}

    data = batch.get("data")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == PIXELS_PER_IMAGE):
        found = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise UserError(f"'{path}': 'data' must be a uint8 array of shape N x {PIXELS_PER_IMAGE}, got {found}")

    if spec.label_key not in batch:
        raise UserError(f"'{path}' has no '{spec.label_key}' entry")
    try:
        labels = np.asarray(batch[spec.label_key])
    except Exception as e:
        raise UserError(f"'{path}': '{spec.label_key}' is not a list of integers ({one_line(e)})") from e
    if labels.ndim != 1 or not (labels.size == 0 or np.issubdtype(labels.dtype, np.integer)):
        raise UserError(f"'{path}': '{spec.label_key}' must be a list of integers")
    if len(labels) != len(data):
        raise UserError(f"'{path}': {len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise UserError(f"'{path}': labels must lie in 0..{spec.num_classes - 1}")
    return data, labels.astype(np.int64)


def _read_files(spec: _CifarSpec, root: Path, shown_root: str, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Read and concatenate batch files into (uint8 N x 3 x 32 x 32 images, int64 N labels)."""
    parts = []
    for name in names:
        path = root / spec.folder / name
        if not path.exists():
            expected = f"{spec.folder}/" if not path.parent.is_dir() else f"{spec.folder}/{name}"
            raise UserError(
                f"{spec.title} not found in '{shown_root}' (expected {expected}); pass --download or --data-dir"
            )
        parts.append(_read_batch(path, spec))
    data = np.concatenate([d for d, _ in parts])
    labels = np.concatenate([lab for _, lab in parts])
    images = torch.from_numpy(data.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE))
    return images, torch.from_numpy(labels)


def _download(name: str, spec: _CifarSpec, root: Path) -> None:
    """Fetch and unpack the official archive into `root` (torchvision skips it if already there)."""
    import torchvision.datasets  # imported here: only downloading needs it

    dataset_class = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[name]
    try:
        root.mkdir(parents=True, exist_ok=True)
        dataset_class(root=str(root), train=True, download=True)
    except Exception as e:  # network, disk or checksum trouble: all the user's to fix
        raise UserError(f"could not download {spec.title} into '{root}': {one_line(e)}") from e


def _train_augmentation():
    from torchvision.transforms import v2  # imported here: keeps `import spikeguard.data` light

    # The standard CIFAR recipe; works on the stored uint8 C x H x W tensor.
    return v2.Compose([v2.RandomCrop(IMAGE_SIZE, padding=4), v2.RandomHorizontalFlip()])


def load_cifar(
    name: str,
    data_dir: str | None = None,
    download: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
    augment: bool = True,
) -> DataSplits:
    """Load "cifar10" or "cifar100" from `data_dir` (default "./data") as described in the module docstring."""
    spec = _SPECS[name]
    check_val_fraction(val_fraction)  # before reading ~180 MB of files
    shown_root = "./data" if data_dir is None else data_dir
    root = Path(shown_root).expanduser()
    if download:
        _download(name, spec, root)

    train_images, train_labels = _read_files(spec, root, shown_root, spec.train_files)
    test_images, test_labels = _read_files(spec, root, shown_root, spec.test_files)
    train_idx, val_idx = split_train_val(len(train_labels), val_fraction, seed)
    return DataSplits(
        name=name,
        train=ImageDataset(train_images, train_labels, train_idx, _train_augmentation() if augment else None),
        val=ImageDataset(train_images, train_labels, val_idx),
        test=ImageDataset(test_images, test_labels, torch.arange(len(test_labels))),
        num_classes=spec.num_classes,
        in_channels=3,
        image_size=IMAGE_SIZE,
        mean=spec.mean,
        std=spec.std,
    )
