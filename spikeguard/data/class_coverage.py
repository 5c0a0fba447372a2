"""Whether "the first n samples" of a split cover its classes: a split stored class by class (mnist5k's file was,
until spikeguard permuted it) makes a number about one class look like one about the data set. Evaluations and
analyses both take the first n test samples, so both ask here and write the answer into their records."""

from __future__ import annotations

import torch


def split_labels(test) -> list[int] | None:
    """The labels of a test split in order, where they can be read without loading its inputs (spikeguard's
    ImageDataset, torchvision's ``targets``, a Subset of either); None otherwise."""
    if isinstance(test, torch.utils.data.Subset):
        labels = split_labels(test.dataset)
        return None if labels is None else [labels[int(i)] for i in test.indices]
    if hasattr(test, "labels") and hasattr(test, "indices"):
        return torch.as_tensor(test.labels)[torch.as_tensor(test.indices)].tolist()
    targets = getattr(test, "targets", None)
    return [int(v) for v in targets] if targets is not None and len(targets) == len(test) else None


def missing_classes_note(asked: int | None, test) -> str | None:
    """The note for "the first n samples" that leave out classes of the split: a split stored class by class
    (mnist5k's file was) makes a number about one class look like one about the data set. None when every class
    of the split is among them, or when the labels cannot be read cheaply."""
    if asked is None or asked >= len(test):
        return None
    labels = split_labels(test)
    if labels is None:
        return None
    seen, present = set(labels[:asked]), set(labels)
    if seen >= present:
        return None
    return (f"the first {asked} samples hold {len(seen)} of the split's {len(present)} classes (missing: "
            f"{', '.join(str(c) for c in sorted(present - seen))}): the numbers describe those classes only")
