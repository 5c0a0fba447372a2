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

from spikeguard.data.splits import DataSplits, fixed_grey_splits


def load_digits(seed: int = 0) -> DataSplits:
    """Load digits split 60/20/20 (train/val/test) as described in the module docstring."""
    # scikit-learn only here: it is needed only when the digits data set is used
    from sklearn.datasets import load_digits as _sklearn_load_digits

    bunch = _sklearn_load_digits()
    images = torch.from_numpy((bunch.images / 16.0).astype(np.float32)).unsqueeze(1)  # N x 1 x 8 x 8
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    return fixed_grey_splits("digits", images, labels, seed)
