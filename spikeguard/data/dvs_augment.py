"""Training-time augmentations for event frames [T, 2, S, S].

Each sample draws one transformation and applies it to all of its T frames
(the scene moves as a whole, not frame by frame). Random numbers come from
torch's global RNG, so DataLoader worker seeding and the run seed apply.

- flip: horizontal flip with probability 1/2.
- roll k: shift by (dy, dx), each uniform in -k..k, wrapping around
  (torch.roll), so no event is lost and the sum is kept.
- rotation d: rotate by an angle uniform in [-d, d] degrees, nearest-neighbour
  (values stay whole event counts / R), corners outside the frame become 0.
- cutout c: zero a c x c square, placed uniformly wholly inside the frame.

Defaults (see DvsOptions): flip and roll 5 on, rotation and cutout off: the
recipe of TET (Deng et al. 2022) for 48 x 48 CIFAR10-DVS, which later SNN
robustness work trains with. Rotation and cutout are the further options of
neuromorphic data augmentation (Li et al. 2022).
"""

from __future__ import annotations

import torch


class DvsAugment:
    """A callable applying the options above to one float frame tensor [T, 2, S, S]."""

    def __init__(self, flip: bool = True, roll: int = 5, rotation: float = 0.0, cutout: int = 0) -> None:
        self.flip, self.roll, self.rotation, self.cutout = flip, roll, rotation, cutout

    def __repr__(self) -> str:
        return f"DvsAugment(flip={self.flip}, roll={self.roll}, rotation={self.rotation}, cutout={self.cutout})"

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        size = frames.shape[-1]
        if self.flip and torch.rand(()) < 0.5:
            frames = frames.flip(-1)
        if self.roll:
            dy, dx = torch.randint(-self.roll, self.roll + 1, (2,)).tolist()
            frames = torch.roll(frames, shifts=(dy, dx), dims=(-2, -1))
        if self.rotation:
            from torchvision.transforms.v2 import InterpolationMode
            from torchvision.transforms.v2.functional import rotate

            angle = float((torch.rand(()) * 2 - 1) * self.rotation)
            frames = rotate(frames, angle, interpolation=InterpolationMode.NEAREST, fill=0.0)
        if self.cutout:
            top, left = torch.randint(0, size - self.cutout + 1, (2,)).tolist()
            frames = frames.clone()
            frames[..., top:top + self.cutout, left:left + self.cutout] = 0
        return frames
