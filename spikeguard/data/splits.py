"""Shared pieces of the data layer: the `DataSplits` record, an in-memory image
dataset, the seeded train/validation split used by CIFAR, and the fixed 60/20/20
split of the small embedded grey-digit sets (digits, mnist5k).

Images are kept in pixel space ([0, 1]); normalisation with `mean`/`std` is the
model's job, so that adversarial attacks can clip to the valid pixel range.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from spikeguard.errors import UserError


@dataclass(frozen=True)
class DataSplits:
    """A data set split three ways, plus what a model needs to know about it."""

    name: str  # "digits" | "mnist5k" | "cifar10" | "cifar100" | "cifar10dvs"
    train: Dataset  # augmented (when asked) training part
    val: Dataset  # held out of the original training set, never augmented
    test: Dataset  # the official test set (digits: a fixed held-out part), never augmented
    num_classes: int
    in_channels: int
    image_size: int  # H == W
    mean: tuple[float, ...]  # per-channel normalisation constants, applied by the model
    std: tuple[float, ...]
    time_steps: int | None = None  # event data: frames per sample (T); None for images
    frame_range: int | None = None  # event data: events per bin that a frame value of 1.0 stands for (R)


class ImageDataset(Dataset):
    """A view of `indices` into an in-memory image tensor.

    `images` is N x C x H x W, either uint8 (CIFAR, kept compact: 1 byte per
    pixel) or float32 already in [0, 1] (digits). Train and val share the same
    `images` tensor and differ only in `indices`, so splitting copies nothing.
    `indices` are positions in the source set (the original training set, or
    the whole digits or mnist5k set), which lets callers and tests check disjointness.

    Items are `(image, label)`: a float32 C x H x W tensor in [0, 1] and an int.
    `transform`, if given, is applied per sample to the stored (uint8 or float)
    image before conversion; only training sets get one.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if images.dim() != 4 or images.shape[0] != labels.shape[0]:
            raise ValueError(f"images {tuple(images.shape)} and labels {tuple(labels.shape)} do not match")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.indices = indices.to(torch.int64)
        self.transform = transform

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = int(self.indices[i])
        image = self.images[j]
        if self.transform is not None:
            image = self.transform(image)
        if image.dtype == torch.uint8:
            image = image.to(torch.float32) / 255.0
        return image, int(self.labels[j])


def check_val_fraction(val_fraction: float) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split positions 0..n-1 into (train, val) by a permutation seeded with `seed`.

    `round(n * val_fraction)` positions go to val. Both parts are returned
    sorted, so the result depends only on (n, val_fraction, seed).
    """
    check_val_fraction(val_fraction)
    n_val = int(round(n * val_fraction))
    if n_val >= n:  # only possible for tiny n; training needs at least one image
        raise UserError(f"val_fraction {val_fraction} leaves no training images out of {n}")
    # A private generator: the split never depends on (or disturbs) the global RNG.
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, train = perm[:n_val], perm[n_val:]
    return train.sort().values, val.sort().values


def stack(dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` samples of a dataset as two tensors."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    xs, ys = zip(*(dataset[i] for i in range(n)))
    return torch.stack(xs), torch.as_tensor([int(v) for v in ys])


# The small grey-digit sets (digits, mnist5k): a fixed test part, the validation part drawn with the seed.
TEST_FRACTION = 0.2
VAL_FRACTION_OF_REST = 0.25  # 0.25 * 80% = 20% of the whole
TEST_SEED = 0  # fixed: the test set never changes between runs


def fixed_grey_splits(name: str, images: torch.Tensor, labels: torch.Tensor, seed: int,
                      pixel_range: float = 1.0) -> DataSplits:
    """60/20/20 train/val/test of one-channel images N x 1 x S x S, stratified by class: test always drawn
    with random_state TEST_SEED, val from the rest with ``seed``. mean/std are those of the training pixels
    divided by ``pixel_range`` (255 for uint8 images), i.e. in [0, 1] pixel scale."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    classes = labels.numpy()
    everything = np.arange(len(classes))
    rest, test = train_test_split(everything, test_size=TEST_FRACTION, stratify=classes, random_state=TEST_SEED)
    train, val = train_test_split(rest, test_size=VAL_FRACTION_OF_REST, stratify=classes[rest], random_state=seed)
    train_idx, val_idx, test_idx = (torch.from_numpy(np.sort(part)) for part in (train, val, test))
    train_pixels = images[train_idx].to(torch.float32) / pixel_range
    return DataSplits(name=name, train=ImageDataset(images, labels, train_idx),
                      val=ImageDataset(images, labels, val_idx), test=ImageDataset(images, labels, test_idx),
                      num_classes=10, in_channels=1, image_size=images.shape[-1],
                      mean=(float(train_pixels.mean()),), std=(float(train_pixels.std()),))
