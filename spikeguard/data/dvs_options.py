"""The config's `dvs:` options for CIFAR10-DVS (spikeguard.data.cifar10_dvs), checkable without PyTorch:
TrainConfig checks them before any heavy import."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spikeguard.data.event_frames import SPLITS
from spikeguard.errors import UserError

if TYPE_CHECKING:
    from spikeguard.data.dvs_augment import DvsAugment


@dataclass(frozen=True)
class DvsOptions:
    """The config's `dvs:` mapping: how events become frames, and the training augmentations."""

    frames: int = 10  # T
    split_by: str = "count"  # "count" | "time"
    size: int = 48  # S: frames are S x S
    flip: bool = True
    roll: int = 5  # max shift in pixels
    rotation: float = 0.0  # max angle in degrees
    cutout: int = 0  # side of the zeroed square in pixels
    cache_dir: str | None = None  # default: <data_dir>/spikeguard-cache

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> DvsOptions:
        """Validated options from a mapping (None: defaults); bad input is a one-line UserError."""
        if values is None:
            return cls()
        if not isinstance(values, Mapping):
            raise UserError(f"dvs must be a mapping of options, got {type(values).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                raise UserError(f"unknown dvs option {key!r}; choose from {', '.join(names)}")
        options = cls(**values)
        options._check()
        return options

    def _check(self) -> None:
        def whole(name: str, low: int, high: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise UserError(f"dvs.{name} must be a whole number in {low}..{high}, got {value!r}")

        whole("frames", 1, 10_000)
        whole("size", 1, 128)
        whole("roll", 0, self.size - 1)
        whole("cutout", 0, self.size)
        if self.split_by not in SPLITS:
            raise UserError(f"dvs.split_by must be one of {', '.join(SPLITS)}, got {self.split_by!r}")
        if not isinstance(self.flip, bool):
            raise UserError(f"dvs.flip must be true or false, got {self.flip!r}")
        if isinstance(self.rotation, bool) or not isinstance(self.rotation, (int, float)) \
                or not 0 <= self.rotation <= 180:
            raise UserError(f"dvs.rotation must be a number of degrees in 0..180, got {self.rotation!r}")
        if self.cache_dir is not None and not isinstance(self.cache_dir, str):
            raise UserError(f"dvs.cache_dir must be a path, got {self.cache_dir!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def augmentation(self) -> DvsAugment:
        from spikeguard.data.dvs_augment import DvsAugment

        return DvsAugment(flip=self.flip, roll=self.roll, rotation=self.rotation, cutout=self.cutout)
