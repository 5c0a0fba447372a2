"""CIFAR10-DVS data layer: both real file formats read back exactly, frames, cache, splits, augmentations,
and every bad input ending in one line."""

import shutil

import numpy as np
import pytest
import torch
from dvs_files import (
    make_synthetic_cifar10dvs,
    random_events,
    write_aedat2,
    write_aedat4,
    write_synthetic_recordings,
)

import spikeguard.data.cifar10_dvs as dvs_module
from spikeguard.cli import main
from spikeguard.data import load_dataset
from spikeguard.data.aedat import make_events, read_events
from spikeguard.data.cifar10_dvs import (
    CLASSES,
    SPLIT_SEED,
    frame_range,
    stratified_split,
)
from spikeguard.data.dvs_augment import DvsAugment
from spikeguard.data.dvs_options import DvsOptions
from spikeguard.data.event_frames import events_to_frames
from spikeguard.errors import UserError


def expected_frames(x, y, p, t, frames, size, split_by="count"):
    """An independent, loop-per-event reference for events_to_frames (the test's own reading of the rules)."""
    n = len(t)
    out = np.zeros((frames, 2, size, size), dtype=np.int64)
    t0, t1 = min(t), max(t)
    for i in range(n):
        f = i * frames // n if split_by == "count" else (t[i] - t0) * frames // (t1 - t0 + 1)
        out[f, p[i], y[i] * size // 128, x[i] * size // 128] += 1
    return out


# ------------------------------------------------------------------ readers

@pytest.mark.parametrize("fmt,kw", [
    ("aedat", {}),
    ("aedat4", {}),
    ("aedat4", {"compression": "lz4", "decoy_stream": True, "trailer": True}),
    ("aedat4", {"compression": "zstd", "packet_events": 97}),
])
def test_reader_returns_exactly_what_was_written(tmp_path, fmt, kw):
    x, y, p, t = random_events(np.random.default_rng(3), 1500)
    x[:4], y[:4], p[:4] = [0, 127, 0, 127], [0, 0, 127, 127], [0, 1, 1, 0]  # corners, both polarities
    path = tmp_path / f"r.{fmt}"
    (write_aedat2 if fmt == "aedat" else write_aedat4)(path, x, y, p, t, **kw)
    events = read_events(path)
    assert events.dtype.names == ("t", "x", "y", "p") and len(events) == 1500
    for name, written in zip("xypt", (x, y, p, t)):
        np.testing.assert_array_equal(events[name], written)


def test_aedat2_orientation_is_spikingjelly_s(tmp_path):
    # One raw DVS128 address by hand: bit 0 = 1 (OFF after 1 - bit0), column 5, row 9.
    path = tmp_path / "one.aedat"
    path.write_bytes(b"#!AER-DAT2.0\r\n# x\r\n" + np.array([1 | 5 << 1 | 9 << 8, 42], dtype=">u4").tobytes())
    (e,) = read_events(path)
    assert (e["x"], e["y"], e["p"], e["t"]) == (127 - 9, 127 - 5, 0, 42)


def test_corrupt_files_name_the_file(tmp_path):
    x, y, p, t = random_events(np.random.default_rng(0), 300)
    cases = {}
    write_aedat2(tmp_path / "good.aedat", x, y, p, t)
    data = (tmp_path / "good.aedat").read_bytes()
    cases["cut.aedat"] = (data[:-3], "whole number")
    cases["odd.aedat"] = (data[:-4], "whole number")  # an address without its timestamp
    cases["v3.aedat"] = (data.replace(b"AER-DAT2.0", b"AER-DAT3.1", 1), "version")
    cases["raw.aedat"] = (data[len(data) - 8 * 300:], "AEDAT 2.0")  # events without a header
    write_aedat4(tmp_path / "good.aedat4", x, y, p, t, packet_events=100)
    data4 = (tmp_path / "good.aedat4").read_bytes()
    cases["cut.aedat4"] = (data4[:-50], "corrupt")
    cases["magic.aedat4"] = (b"#!AER-DAT3.1\r\n" + data4[14:], "AEDAT 4.0")
    cases["header.aedat4"] = (data4[:14] + b"\xff\xff\x00\x00" + data4[18:], "corrupt")
    for name, (content, fragment) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError) as info:
            read_events(tmp_path / name)
        message = str(info.value)
        assert str(tmp_path / name) in message and fragment in message and "\n" not in message, message


# ------------------------------------------------------------------ frames

def test_split_by_count_spreads_the_remainder_and_keeps_every_event():
    x, y, p, t = random_events(np.random.default_rng(1), 103)
    counts = events_to_frames(make_events(t, x, y, p), frames=10, split_by="count", size=128)
    assert counts.dtype == np.uint16 and counts.shape == (10, 2, 128, 128)
    per_frame = counts.sum(axis=(1, 2, 3))
    assert per_frame.sum() == 103 and set(per_frame.tolist()) == {10, 11}
    np.testing.assert_array_equal(counts, expected_frames(x, y, p, t, 10, 128))


def test_split_by_time_uses_equal_windows():
    t = np.array([100, 100, 199, 200, 350, 499, 500, 1099])  # span 1000 us -> windows of 250 us
    x = y = np.arange(8)
    p = np.zeros(8, dtype=int)
    counts = events_to_frames(make_events(t, x, y, p), frames=4, split_by="time", size=128)
    assert counts.sum(axis=(1, 2, 3)).tolist() == [4, 3, 0, 1]  # [100, 350) [350, 600) [600, 850) [850, 1100)
    np.testing.assert_array_equal(counts, expected_frames(x, y, p, t, 4, 128, "time"))


@pytest.mark.parametrize("size", [48, 32, 7])
def test_resize_is_sum_pooling_of_events(size):
    x, y, p, t = random_events(np.random.default_rng(2), 5000)
    counts = events_to_frames(make_events(t, x, y, p), frames=3, split_by="time", size=size)
    assert counts.shape == (3, 2, size, size) and counts.sum() == 5000 and counts[:, 1].sum() == p.sum()
    np.testing.assert_array_equal(counts, expected_frames(x, y, p, t, 3, size, "time"))


def test_no_events_give_empty_frames():
    empty = make_events([], [], [], [])
    for split_by in ("count", "time"):
        assert events_to_frames(empty, 4, split_by, 48).sum() == 0


def test_frame_range_is_the_999th_percentile_of_the_given_samples():
    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, size=(30, 2, 2, 8, 8)).astype(np.uint16)
    counts[0, 0, 0, 0, 0] = 900  # outlier in a sample left out below
    idx = np.arange(1, 30)
    assert frame_range(counts, idx) == int(np.percentile(counts[idx], 99.9, method="inverted_cdf"))
    assert frame_range(np.zeros((2, 1, 2, 4, 4), np.uint16), np.arange(2)) == 1


# ------------------------------------------------------------------ splits

def test_fixed_split_is_9000_1000_with_100_per_class_on_the_real_layout():
    labels = np.repeat(np.arange(10), 1000)
    train, test = stratified_split(labels, 0.1, SPLIT_SEED)
    assert len(train) == 9000 and len(test) == 1000
    assert np.bincount(labels[test]).tolist() == [100] * 10
    assert len(np.intersect1d(train, test)) == 0 and len(np.union1d(train, test)) == 10000
    again = stratified_split(labels, 0.1, SPLIT_SEED)
    assert np.array_equal(test, again[1]) and not np.array_equal(test, stratified_split(labels, 0.1, 1)[1])


def test_stratified_split_keeps_class_shares_for_unequal_classes():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    _, held = stratified_split(labels, 0.2, seed=5)
    assert np.bincount(labels[held]).tolist() == [10, 6, 4]


# ------------------------------------------------------------------ the data set end to end

@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Both formats of the same tiny set (4 recordings per class, 2000 events each)."""
    sets = {}
    for fmt in ("aedat", "aedat4"):
        root = tmp_path_factory.mktemp(fmt)
        sets[fmt] = (root, write_synthetic_recordings(root, per_class=4, fmt=fmt, seed=7, events_per_sample=2000))
    return sets


@pytest.mark.parametrize("fmt", ["aedat", "aedat4"])
def test_loader_round_trip(synthetic, fmt, tmp_path):
    root, written = synthetic[fmt]
    data = load_dataset("cifar10dvs", data_dir=str(root), seed=0, augment=False,
                        dvs={"frames": 5, "size": 32, "cache_dir": str(tmp_path)})
    assert (data.name, data.num_classes, data.in_channels, data.image_size) == ("cifar10dvs", 10, 2, 32)
    assert data.time_steps == 5 and data.frame_range >= 1 and data.mean == (0.0, 0.0) and data.std == (1.0, 1.0)
    assert len(data.train) + len(data.val) + len(data.test) == 40 and len(data.test) == 4
    counts = data.train.counts
    for j, (path, (x, y, p, t)) in enumerate(written):  # the file list is sorted as written
        assert int(data.train.labels[j]) == CLASSES.index(path.parent.name)
        assert counts[j].sum() == 2000 and counts[j][:, 1].sum() == p.sum()
        np.testing.assert_array_equal(counts[j], expected_frames(x, y, p, t, 5, 32))
    frames, label = data.test[0]
    j = int(data.test.indices[0])
    r = data.frame_range
    assert frames.dtype == torch.float32 and frames.shape == (5, 2, 32, 32) and label == int(data.test.labels[j])
    expected = np.minimum(counts[j], r) / r
    np.testing.assert_allclose(frames.numpy(), expected, rtol=0, atol=1e-7)
    train_idx = np.concatenate([data.train.indices.numpy(), data.val.indices.numpy()])
    assert r == frame_range(counts, np.sort(train_idx))


def test_splits_are_disjoint_and_the_test_set_ignores_the_run_seed(synthetic, tmp_path):
    root, _ = synthetic["aedat"]
    opts = {"cache_dir": str(tmp_path)}
    a = load_dataset("cifar10dvs", data_dir=str(root), seed=0, val_fraction=0.25, dvs=opts)
    b = load_dataset("cifar10dvs", data_dir=str(root), seed=1, val_fraction=0.25, dvs=opts)
    a2 = load_dataset("cifar10dvs", data_dir=str(root), seed=0, val_fraction=0.25, dvs=opts)
    for d in (a, b):
        parts = [set(d.train.indices.tolist()), set(d.val.indices.tolist()), set(d.test.indices.tolist())]
        assert sum(map(len, parts)) == 40 and len(set.union(*parts)) == 40
        assert len(parts[1]) == 9  # round(36 * 0.25)
    assert torch.equal(a.test.indices, b.test.indices)  # fixed test split
    assert a.frame_range == b.frame_range  # R comes from the fixed training partition
    assert not torch.equal(a.val.indices, b.val.indices)  # val follows the run seed...
    assert torch.equal(a.val.indices, a2.val.indices)  # ...deterministically
    assert a.train.transform is not None and a.val.transform is None and a.test.transform is None


def test_class_folders_are_found_below_the_data_dir(synthetic, tmp_path):
    root, _ = synthetic["aedat"]
    nested = tmp_path / "data" / "CIFAR10DVS" / "CIFAR10DVS"
    shutil.copytree(root, nested, ignore=shutil.ignore_patterns("spikeguard-cache"))
    data = load_dataset("cifar10dvs", data_dir=str(tmp_path / "data"), augment=False)
    assert len(data.train) + len(data.val) + len(data.test) == 40
    assert any((tmp_path / "data" / "spikeguard-cache").glob("cifar10dvs-T10-count-S48-*.npz"))


def test_cache_is_reused_and_a_corrupt_cache_is_rebuilt(synthetic, tmp_path, monkeypatch):
    root, _ = synthetic["aedat4"]
    opts = {"frames": 4, "size": 16, "cache_dir": str(tmp_path)}
    first = load_dataset("cifar10dvs", data_dir=str(root), dvs=opts)
    (cache,) = tmp_path.glob("*.npz")

    def no_reading(path):
        raise AssertionError(f"read {path} despite the cache")

    monkeypatch.setattr(dvs_module, "read_events", no_reading)
    second = load_dataset("cifar10dvs", data_dir=str(root), dvs=opts)
    assert np.array_equal(first.train.counts, second.train.counts) and first.frame_range == second.frame_range
    with pytest.raises(AssertionError, match="despite the cache"):  # other frame options: another cache
        load_dataset("cifar10dvs", data_dir=str(root), dvs={**opts, "split_by": "time"})
    monkeypatch.undo()

    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    with pytest.warns(UserWarning, match="rebuilding"):
        third = load_dataset("cifar10dvs", data_dir=str(root), dvs=opts)
    assert np.array_equal(first.train.counts, third.train.counts)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file
    monkeypatch.setattr(dvs_module, "read_events", no_reading)
    load_dataset("cifar10dvs", data_dir=str(root), dvs=opts)  # the rebuilt cache is good again


def test_rewritten_recordings_of_the_same_size_are_not_served_from_the_cache(tmp_path):
    """AEDAT 2.0 sizes depend only on the event count: new recordings with the old names and sizes must
    still be converted again, not read from the old cache."""
    root = tmp_path / "data"
    write_synthetic_recordings(root, per_class=2, fmt="aedat", seed=0, events_per_sample=500)
    opts = {"frames": 2, "size": 16}
    first = load_dataset("cifar10dvs", data_dir=str(root), augment=False, dvs=opts)
    sizes = {p: p.stat().st_size for p in root.rglob("*.aedat")}
    write_synthetic_recordings(root, per_class=2, fmt="aedat", seed=1, events_per_sample=500)
    assert {p: p.stat().st_size for p in root.rglob("*.aedat")} == sizes
    second = load_dataset("cifar10dvs", data_dir=str(root), augment=False, dvs=opts)
    assert not np.array_equal(first.test.counts, second.test.counts)


# ------------------------------------------------------------------ augmentations

def test_augmentations_keep_shape_and_sign_and_flip_roll_keep_the_sum():
    torch.manual_seed(0)
    frames = torch.rand(4, 2, 16, 16) * (torch.rand(4, 2, 16, 16) < 0.3)
    for _ in range(10):
        out = DvsAugment(flip=True, roll=3)(frames)
        assert out.shape == frames.shape and torch.allclose(out.sum(), frames.sum())
        shifted = [torch.roll(f, (dy, dx), (-2, -1)) for dy in range(-3, 4) for dx in range(-3, 4)
                   for f in (frames, frames.flip(-1))]
        assert any(torch.equal(out, s) for s in shifted)  # one shift and flip for all frames
    rotated = DvsAugment(flip=False, roll=0, rotation=30)(frames)
    assert rotated.shape == frames.shape and rotated.min() >= 0
    assert set(rotated.unique().tolist()) <= set(frames.unique().tolist())  # nearest: no new values
    cut = DvsAugment(flip=False, roll=0, cutout=6)(torch.ones(4, 2, 16, 16))
    assert cut.min() == 0 and (cut == 0).sum() == 4 * 2 * 36 and torch.equal(cut[0], cut[3])
    torch.manual_seed(5)
    a = DvsAugment(rotation=10, cutout=3)(frames)
    torch.manual_seed(5)
    assert torch.equal(a, DvsAugment(rotation=10, cutout=3)(frames))  # torch's RNG drives it


@pytest.mark.parametrize("bad,fragment", [
    ({"frame": 10}, "unknown dvs option 'frame'"),
    ({"frames": 0}, "dvs.frames"),
    ({"frames": True}, "dvs.frames"),
    ({"size": 200}, "dvs.size"),
    ({"split_by": "space"}, "dvs.split_by"),
    ({"roll": 48}, "dvs.roll"),
    ({"rotation": -1}, "dvs.rotation"),
    ({"cutout": 49}, "dvs.cutout"),
    ({"flip": "yes"}, "dvs.flip"),
    ([1, 2], "mapping"),
])
def test_bad_dvs_options_are_one_line(bad, fragment):
    with pytest.raises(UserError, match=fragment):
        DvsOptions.from_dict(bad)
    assert DvsOptions.from_dict(None) == DvsOptions() == DvsOptions.from_dict({})
    assert DvsOptions().to_dict()["frames"] == 10


# ------------------------------------------------------------------ bad data directories

def test_a_corrupt_recording_in_the_set_names_the_file(synthetic, tmp_path):
    root, written = synthetic["aedat"]
    copy = tmp_path / "set"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("spikeguard-cache"))
    bad = copy / "dog" / written[21][0].name
    bad.write_bytes(bad.read_bytes()[:-5])
    with pytest.raises(UserError, match=str(bad)):
        load_dataset("cifar10dvs", data_dir=str(copy))


def bad_dirs(tmp_path):
    empty = tmp_path / "empty"
    for c in CLASSES:
        (empty / c).mkdir(parents=True)
    (empty / "cat" / "notes.txt").write_text("no recordings here")
    mixed = tmp_path / "mixed"
    make_synthetic_cifar10dvs(mixed, per_class=1, fmt="aedat", events_per_sample=50)
    make_synthetic_cifar10dvs(mixed / "x", per_class=1, fmt="aedat4", events_per_sample=50)
    for c in CLASSES[:2]:
        shutil.move(mixed / "x" / c / f"{c}_0.aedat4", mixed / c / f"{c}_0.aedat4")
    shutil.rmtree(mixed / "x")
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    return [(empty, "no CIFAR10-DVS files"), (mixed, "mixes formats"), (nothing, "no CIFAR10-DVS files"),
            (tmp_path / "absent", "not a directory")]


def test_no_files_or_mixed_formats_are_one_line_errors(tmp_path):
    for directory, fragment in bad_dirs(tmp_path):
        with pytest.raises(UserError) as info:
            load_dataset("cifar10dvs", data_dir=str(directory))
        assert fragment in str(info.value) and str(directory) in str(info.value) and "\n" not in str(info.value)


def test_no_files_or_mixed_formats_exit_2_through_the_cli(tmp_path, capsys):
    for directory, fragment in bad_dirs(tmp_path)[:2]:
        out = tmp_path / f"run-{directory.name}"
        code = main(["train", "--dataset", "cifar10dvs", "--data-dir", str(directory), "--epochs", "1",
                     "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and fragment in err, err
        assert not out.exists()
