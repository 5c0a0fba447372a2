"""The scikit-learn "digits" data set: 1,797 grey 8x8 images of 0-9.

It ships inside the scikit-learn wheel, so it needs no download and suits
quick experiments and tests.

Split (fixed, documented, independent of `val_fraction`):
  * test  = 20% of the whole set, stratified by class, always drawn with
            random_state 0, so every run evaluates on the same images;
  * val   = 25% of the remaining 80% (i.e. 20% of the whole), stratified by
            class, drawn with random_state `seed`;
  * train = the rest (60% of the whole).
`indices` on each dataset are positions in `sklearn.datasets.load_digits()`.

Pixels (0..16 in the source) are divided by 16 to lie in [0, 1]. There is no
augmentation: flips and crops would change what an 8x8 digit means.
mean/std are those of all training-split pixels (one channel).
"""

from __future__ import annotations

import numpy as np
import torch

from spikeguard.data.splits import DataSplits, ImageDataset

TEST_FRACTION = 0.2
VAL_FRACTION_OF_REST = 0.25  # 0.25 * 80% = 20% of the whole
TEST_SEED = 0  # fixed: the test set never changes between runs


def load_digits(seed: int = 0) -> DataSplits:
    """Load digits split 60/20/20 (train/val/test) as described in the module docstring."""
    # scikit-learn only here: it is needed only when the digits data set is used
    from sklearn.datasets import load_digits as _sklearn_load_digits
    from sklearn.model_selection import train_test_split

    bunch = _sklearn_load_digits()
    images = torch.from_numpy((bunch.images / 16.0).astype(np.float32)).unsqueeze(1)  # N x 1 x 8 x 8
    labels = torch.from_numpy(bunch.target.astype(np.int64))

    everything = np.arange(len(labels))
    rest, test = train_test_split(
        everything, test_size=TEST_FRACTION, stratify=bunch.target, random_state=TEST_SEED
    )
    train, val = train_test_split(
        rest, test_size=VAL_FRACTION_OF_REST, stratify=bunch.target[rest], random_state=seed
    )
    train_idx, val_idx, test_idx = (torch.from_numpy(np.sort(part)) for part in (train, val, test))

    train_pixels = images[train_idx]
    return DataSplits(
        name="digits",
        train=ImageDataset(images, labels, train_idx),
        val=ImageDataset(images, labels, val_idx),
        test=ImageDataset(images, labels, test_idx),
        num_classes=10,
        in_channels=1,
        image_size=8,
        mean=(float(train_pixels.mean()),),
        std=(float(train_pixels.std()),),
    )
