"""CIFAR10-DVS (Li et al. 2017): 10,000 DVS128 recordings of CIFAR-10 images, 1,000 per class.

Where the files are: `data_dir` (default "./data") must hold the ten class
folders airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck,
or contain exactly one folder that does, up to three levels down (so both
"<data_dir>/airplane/..." and the unpacked downloads of tonic
"<data_dir>/CIFAR10DVS/CIFAR10DVS/airplane/..." or SpikingJelly
"<data_dir>/extract/airplane/..." work). Each class folder holds recordings
directly: all ".aedat" (AEDAT 2.0, the original release) or all ".aedat4"
(the AEDAT 4 re-release), never a mix. See `aedat.py` for the readers and
`event_frames.py` for how events become frames.

Cache: the first load converts every recording to uint16 counts [T, 2, S, S]
(with a progress bar) and writes them, compressed, to
"<data_dir>/spikeguard-cache/cifar10dvs-T<T>-<split_by>-S<S>-<key>.npz"
(or `cache_dir`), atomically. The key is a hash of the frame options and the
list of files with their sizes, so other options or other files get their own
cache. A cache that cannot be read is rebuilt with a warning.

Splits: the test set is a fixed 10% of each class (1,000 of 10,000, 100 per
class on the real set), drawn with the constant SPLIT_SEED, so it never depends
on the run's seed. The validation set is `val_fraction` of the remaining
training partition, stratified by class, drawn with the run's `seed`.
Only the training set is augmented (`dvs_augment.py`).

Items are (frames, label): float32 [T, 2, S, S] holding min(count, R) / R,
where the frame range R (>= 1) is the 99.9th percentile of all bin counts of
the fixed training partition (train + val), rounded up to a whole count.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from spikeguard.data.aedat import read_events
from spikeguard.data.dvs_options import DvsOptions
from spikeguard.data.event_frames import events_to_frames
from spikeguard.data.splits import DataSplits, check_val_fraction
from spikeguard.errors import UserError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FORMATS = (".aedat", ".aedat4")
SPLIT_SEED = 2017  # the fixed test split's seed (the data set's year); never the run's seed
TEST_FRACTION = 0.1
RANGE_PERCENTILE = 99.9
CACHE_VERSION = 1  # bump when readers or framing change, so old caches are not reused
SEARCH_DEPTH = 3


# ---------------------------------------------------------------- finding the files

def _class_dirs(directory: Path) -> list[str]:
    return [c for c in CLASSES if (directory / c).is_dir()]


def find_class_root(data_dir: Path) -> Path:
    """The folder holding the ten class folders: `data_dir` or the one such folder below it."""
    if not data_dir.is_dir():
        raise UserError(f"CIFAR10-DVS not found: '{data_dir}' is not a directory")
    level = [data_dir]
    for _ in range(SEARCH_DEPTH + 1):
        roots = [d for d in level if len(_class_dirs(d)) == len(CLASSES)]
        if len(roots) > 1:
            raise UserError(f"several CIFAR10-DVS copies under '{data_dir}' ({', '.join(map(str, roots))}); "
                            "pass the one to use as the data directory")
        if roots:
            return roots[0]
        partial = [d for d in level if _class_dirs(d)]
        if partial:
            missing = [c for c in CLASSES if c not in _class_dirs(partial[0])]
            raise UserError(f"'{partial[0]}' lacks the CIFAR10-DVS class folders {', '.join(missing)}")
        level = sorted(c for d in level for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))
    raise UserError(f"no CIFAR10-DVS files in '{data_dir}': expected the class folders {', '.join(CLASSES)} "
                    "holding .aedat or .aedat4 files")


def list_recordings(root: Path) -> tuple[list[Path], np.ndarray]:
    """All recordings under the class folders of `root`, sorted, with their class indices."""
    by_format: dict[str, list[tuple[Path, int]]] = {ext: [] for ext in FORMATS}
    archives = []
    for label, name in enumerate(CLASSES):
        for path in sorted((root / name).iterdir()):
            if path.is_file() and path.suffix in by_format:
                by_format[path.suffix].append((path, label))
            elif path.suffix == ".zip":
                archives.append(path)
    archives += sorted(root.glob("*.zip"))
    counts = {ext: len(found) for ext, found in by_format.items()}
    if all(counts.values()):
        raise UserError(f"'{root}' mixes formats ({counts['.aedat']} .aedat and {counts['.aedat4']} .aedat4 "
                        "files); keep one format")
    found = by_format[".aedat"] or by_format[".aedat4"]
    if not found:
        hint = " (unpack the .zip archives first)" if archives else ""
        raise UserError(f"no CIFAR10-DVS files (.aedat or .aedat4) in the class folders of '{root}'{hint}")
    return [p for p, _ in found], np.array([label for _, label in found], dtype=np.int64)


# ---------------------------------------------------------------- splits and frame range

def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split positions 0..n-1 into (kept, held out), holding out round(n * fraction) of them, stratified.

    Within each class, a seeded permutation ranks the samples; a sample's key is (rank + u) / class size
    (u uniform in [0, 1)), and the lowest keys are held out. Each class so gives up a share of its samples
    in proportion to its size (exactly `fraction` of each class when that is whole), and the result depends
    only on (labels, fraction, seed). Both parts are sorted. Written here rather than with scikit-learn's
    train_test_split(stratify=...) because that refuses a class with a single recording (a subset of the
    data set) instead of splitting what there is.
    """
    rng = np.random.default_rng(seed)
    n = len(labels)
    key = np.empty(n)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        ranked = members[rng.permutation(len(members))]
        key[ranked] = (np.arange(len(members)) + rng.random(len(members))) / len(members)
    order = np.argsort(key, kind="stable")
    n_held = round(n * fraction)
    return np.sort(order[n_held:]), np.sort(order[:n_held])


def frame_range(counts: np.ndarray, indices: np.ndarray) -> int:
    """R: the 99.9th percentile (the smallest count whose share of bins at or below it reaches 99.9%)
    of all bin counts of the samples `indices`, at least 1."""
    hist = np.zeros(np.iinfo(np.uint16).max + 1, dtype=np.int64)
    for start in range(0, len(indices), 256):  # chunks: no 8-byte copy of the whole set
        hist += np.bincount(counts[indices[start:start + 256]].ravel(), minlength=len(hist))
    total = hist.sum()
    if total == 0:
        return 1
    value = int(np.searchsorted(np.cumsum(hist), total * RANGE_PERCENTILE / 100, side="left"))
    return max(1, value)


# ---------------------------------------------------------------- conversion and cache

def cache_key(root: Path, files: list[Path], options: DvsOptions) -> str:
    """What the cached frames depend on. Size alone cannot tell two recordings with the same event count
    apart, so each file's modification time is in the key too (as make does; hashing the contents would
    re-read the whole set on every load), and so is the root, for a cache_dir shared by several copies."""
    listing = [[p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    text = json.dumps({"version": CACHE_VERSION, "root": str(root.resolve()), "frames": options.frames,
                       "split_by": options.split_by, "size": options.size, "files": listing})
    return hashlib.sha256(text.encode()).hexdigest()


def cache_path(data_dir: Path, options: DvsOptions, key: str) -> Path:
    folder = Path(options.cache_dir).expanduser() if options.cache_dir else data_dir / "spikeguard-cache"
    return folder / f"cifar10dvs-T{options.frames}-{options.split_by}-S{options.size}-{key[:16]}.npz"


def convert(files: list[Path], options: DvsOptions, progress: bool | None = None) -> np.ndarray:
    """Frames of every recording: uint16 [N, T, 2, S, S]. A bar of the files on a terminal unless ``progress``
    is False."""
    from spikeguard.progress import Reporter

    counts = np.zeros((len(files), options.frames, 2, options.size, options.size), dtype=np.uint16)
    with Reporter(enabled=progress is not False).counting("CIFAR10-DVS recordings to frames", len(files)) as step:
        for i, path in enumerate(files):
            counts[i] = events_to_frames(read_events(path), options.frames, options.split_by, options.size)
            step()
    return counts


def _read_cache(path: Path, key: str, labels: np.ndarray, options: DvsOptions) -> tuple[np.ndarray, int]:
    with np.load(path, allow_pickle=False) as z:
        stored_key, counts, stored_labels, r = str(z["key"]), z["counts"], z["labels"], int(z["frame_range"])
    shape = (len(labels), options.frames, 2, options.size, options.size)
    if stored_key != key or counts.dtype != np.uint16 or counts.shape != shape \
            or not np.array_equal(stored_labels, labels) or r < 1:
        raise ValueError("its contents do not match the data files and options")
    return counts, r


def _write_cache(path: Path, key: str, counts: np.ndarray, labels: np.ndarray, r: int) -> None:
    from spikeguard.files import write_bytes

    buffer = io.BytesIO()
    np.savez_compressed(buffer, key=np.array(key), counts=counts, labels=labels, frame_range=np.array(r))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, buffer.getvalue())
    except (OSError, UserError) as e:  # a read-only data dir costs a re-conversion next time, nothing else
        warnings.warn(f"could not write the CIFAR10-DVS frame cache '{path}' ({e}); it will be rebuilt next time",
                      stacklevel=3)


def load_frames(data_dir: Path, options: DvsOptions, progress: bool | None = None):
    """(counts [N, T, 2, S, S] uint16, labels [N], R), cached."""
    root = find_class_root(data_dir)
    files, labels = list_recordings(root)
    key = cache_key(root, files, options)
    path = cache_path(data_dir, options, key)
    if path.exists():
        try:
            counts, r = _read_cache(path, key, labels, options)
            return counts, labels, r
        except Exception as e:  # noqa: BLE001 -- any damage (truncation, bad zip, wrong contents): rebuild
            warnings.warn(f"rebuilding the CIFAR10-DVS frame cache '{path}': it is unreadable ({e})", stacklevel=2)
    counts = convert(files, options, progress)
    train, _ = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    r = frame_range(counts, train)
    _write_cache(path, key, counts, labels, r)
    return counts, labels, r


# ---------------------------------------------------------------- the data set

class DvsFrameDataset(Dataset):
    """A view of `indices` (positions in the whole file list) into shared uint16 counts [N, T, 2, S, S].

    Items are (float32 [T, 2, S, S] = min(count, R) / R, int label); `transform` (training only) is
    applied to the float frames.
    """

    def __init__(self, counts: np.ndarray, labels: np.ndarray, indices: np.ndarray, frame_range: int,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.counts = counts
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.indices = torch.as_tensor(indices, dtype=torch.int64)
        self.frame_range = int(frame_range)
        self.transform = transform

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = int(self.indices[i])
        frames = torch.from_numpy(self.counts[j].astype(np.float32))
        frames = frames.clamp_(max=self.frame_range).div_(self.frame_range)
        if self.transform is not None:
            frames = self.transform(frames)
        return frames, int(self.labels[j])


def load_cifar10_dvs(
    data_dir: str | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    augment: bool = True,
    dvs: Mapping[str, Any] | None = None,
    progress: bool | None = None,
) -> DataSplits:
    """Load CIFAR10-DVS from `data_dir` (default "./data") as described in the module docstring."""
    options = DvsOptions.from_dict(dvs)
    check_val_fraction(val_fraction)
    counts, labels, r = load_frames(Path(data_dir or "./data").expanduser(), options, progress)
    train_all, test = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    keep, held = stratified_split(labels[train_all], val_fraction, seed)
    if len(keep) == 0:
        raise UserError(f"val_fraction {val_fraction} leaves no training recordings out of {len(train_all)}")
    train, val = train_all[keep], train_all[held]
    transform = options.augmentation() if augment else None
    return DataSplits(
        name="cifar10dvs",
        train=DvsFrameDataset(counts, labels, train, r, transform),
        val=DvsFrameDataset(counts, labels, val, r),
        test=DvsFrameDataset(counts, labels, test, r),
        num_classes=len(CLASSES),
        in_channels=2,
        image_size=options.size,
        mean=(0.0, 0.0),
        std=(1.0, 1.0),
        time_steps=options.frames,
        frame_range=r,
    )
