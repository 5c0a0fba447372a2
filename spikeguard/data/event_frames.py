"""Events -> frames of event counts.

`events_to_frames(events, frames, split_by, size)` returns uint16 counts of
shape [T, 2, S, S], indexed [frame, polarity (0 = OFF, 1 = ON), y, x].

Splitting into T frames:
- "count" (default): by event order, event i (of N) goes to frame i * T // N,
  so every frame holds N // T or N // T + 1 events; which frames get the one
  extra event is fixed by that formula (the remainder is spread evenly, not
  piled into the last frame).
- "time": equal time windows over [t_min, t_max]: an event at t goes to frame
  (t - t_min) * T // (t_max - t_min + 1), so every event lands in a frame.

Resizing from the 128 x 128 sensor to S x S scales the event coordinates
(x' = x * S // 128, same for y) before counting, i.e. sum pooling: a frame's
sum equals its number of events and each bin counts the events of a block of
real sensor pixels. Counts above 65535 (never seen on CIFAR10-DVS) are clipped
to fit uint16.
"""

from __future__ import annotations

import numpy as np

from spikeguard.data.aedat import SENSOR_SIZE

SPLITS = ("count", "time")
MAX_COUNT = np.iinfo(np.uint16).max


def frame_of_each_event(events: np.ndarray, frames: int, split_by: str) -> np.ndarray:
    """The frame index (0..frames-1) of every event, as described in the module docstring."""
    n = len(events)
    if split_by == "count":
        return np.arange(n, dtype=np.int64) * frames // max(n, 1)
    if split_by == "time":
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        t = events["t"].astype(np.int64)
        t0 = t.min()
        return (t - t0) * frames // (t.max() - t0 + 1)
    raise ValueError(f"split_by must be one of {SPLITS}, got {split_by!r}")


def events_to_frames(events: np.ndarray, frames: int = 10, split_by: str = "count", size: int = 48,
                     sensor: int = SENSOR_SIZE) -> np.ndarray:
    """Count events into uint16 frames [frames, 2, size, size] (see the module docstring)."""
    f = frame_of_each_event(events, frames, split_by)
    x = events["x"].astype(np.int64) * size // sensor
    y = events["y"].astype(np.int64) * size // sensor
    p = events["p"].astype(np.int64)
    bins = ((f * 2 + p) * size + y) * size + x
    counts = np.bincount(bins, minlength=frames * 2 * size * size)
    return np.minimum(counts, MAX_COUNT).astype(np.uint16).reshape(frames, 2, size, size)
