"""Tests for spikeguard.data: digits splits, CIFAR file reading, augmentation, and errors."""

from __future__ import annotations

import io
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeguard.data import DATASETS, DataSplits, load_dataset
from spikeguard.data.splits import split_train_val
from spikeguard.errors import UserError

PER_BATCH = 20  # images per small CIFAR file written by the tests


# ---------------------------------------------------------------- helpers


def _indices(dataset) -> set[int]:
    return set(dataset.indices.tolist())


def _write_pickle(path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


class _Py2Pickler(pickle._Pickler):
    """Writes bytes and str as Python 2 wrote its `str` (BINSTRING), like the real CIFAR files."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def _write_py2_pickle(path, obj) -> None:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())


def _make_cifar(root, name: str, rng: np.random.Generator, writer=_write_pickle):
    """Write a small CIFAR data set in the official layout; return (train data, train labels, test data, test labels)."""
    if name == "cifar10":
        folder, train_files, test_files, label_key, classes = (
            "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10)
    else:
        folder, train_files, test_files, label_key, classes = (
            "cifar-100-python", ["train"], ["test"], b"fine_labels", 100)
    directory = root / folder
    directory.mkdir(parents=True)

    def write(files, per_file):
        all_data, all_labels = [], []
        for fname in files:
            data = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
            labels = rng.integers(0, classes, size=per_file).tolist()
            batch = {b"batch_label": b"test batch", b"data": data, label_key: labels,
                     b"filenames": [f"img_{i}.png".encode() for i in range(per_file)]}
            if name == "cifar100":
                batch[b"coarse_labels"] = [c // 5 for c in labels]
            writer(directory / fname, batch)
            all_data.append(data)
            all_labels += labels
        return np.concatenate(all_data), np.array(all_labels)

    train_data, train_labels = write(train_files, PER_BATCH * 5 // len(train_files))
    test_data, test_labels = write(test_files, PER_BATCH)
    return train_data, train_labels, test_data, test_labels


def _expected_image(data: np.ndarray, i: int) -> torch.Tensor:
    return torch.from_numpy(data[i].reshape(3, 32, 32).astype(np.float32)) / 255.0


@pytest.fixture
def cifar10(tmp_path):
    arrays = _make_cifar(tmp_path, "cifar10", np.random.default_rng(0))
    return tmp_path, arrays


# ---------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_dataset("digits", seed=0)


def test_digits_shapes_range_and_metadata(digits):
    assert (digits.name, digits.num_classes, digits.in_channels, digits.image_size) == ("digits", 10, 1, 8)
    assert len(digits.mean) == len(digits.std) == 1 and 0 < digits.mean[0] < 1 and 0 < digits.std[0] < 1
    for split in (digits.train, digits.val, digits.test):
        image, label = split[0]
        assert image.shape == (1, 8, 8) and image.dtype == torch.float32
        assert 0 <= int(label) < 10
        everything = torch.stack([split[i][0] for i in range(len(split))])
        assert everything.min() >= 0 and everything.max() <= 1
    assert everything.max() == 1  # pixels were scaled by 1/16, not 1/255


def test_digits_splits_disjoint_cover_and_60_20_20(digits):
    train, val, test = _indices(digits.train), _indices(digits.val), _indices(digits.test)
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == set(range(1797))
    assert (len(train), len(val), len(test)) == (1077, 360, 360)
    # stratified: every class appears in val and test in roughly its share
    for split in (digits.val, digits.test):
        counts = np.bincount([split[i][1] for i in range(len(split))], minlength=10)
        assert counts.min() >= 30


def test_digits_test_split_fixed_val_split_seeded(digits):
    other = load_dataset("digits", seed=1)
    again = load_dataset("digits", seed=0)
    assert _indices(other.test) == _indices(digits.test)
    assert _indices(other.val) != _indices(digits.val)
    for a, b in ((digits.train, again.train), (digits.val, again.val), (digits.test, again.test)):
        assert torch.equal(a.indices, b.indices)
    # val_fraction does not move the digits test set
    assert _indices(load_dataset("digits", val_fraction=0.3).test) == _indices(digits.test)


def test_digits_never_augmented():
    splits = load_dataset("digits", augment=True)
    assert torch.equal(splits.train[3][0], splits.train[3][0])


# ---------------------------------------------------------------- CIFAR files


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
@pytest.mark.parametrize("writer", [_write_pickle, _write_py2_pickle], ids=["py3-protocol2", "py2-style"])
def test_cifar_round_trip(tmp_path, name, classes, writer):
    train_data, train_labels, test_data, test_labels = _make_cifar(tmp_path, name, np.random.default_rng(1), writer)
    splits = load_dataset(name, data_dir=str(tmp_path), val_fraction=0.1, seed=3, augment=False)

    assert (splits.name, splits.num_classes, splits.in_channels, splits.image_size) == (name, classes, 3, 32)
    assert len(splits.mean) == len(splits.std) == 3
    assert (len(splits.train), len(splits.val), len(splits.test)) == (90, 10, 20)
    train, val = _indices(splits.train), _indices(splits.val)
    assert not (train & val) and train | val == set(range(100))

    for dataset, data, labels in ((splits.val, train_data, train_labels), (splits.train, train_data, train_labels),
                                  (splits.test, test_data, test_labels)):
        for k in range(len(dataset)):
            image, label = dataset[k]
            source = int(dataset.indices[k])
            assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
            assert torch.equal(image, _expected_image(data, source))
            assert int(label) == labels[source]
    assert [int(i) for i in splits.test.indices] == list(range(20))


def test_cifar_val_split_seeded(cifar10):
    root, _ = cifar10
    a = load_dataset("cifar10", data_dir=str(root), seed=0)
    b = load_dataset("cifar10", data_dir=str(root), seed=0)
    c = load_dataset("cifar10", data_dir=str(root), seed=1)
    assert torch.equal(a.val.indices, b.val.indices) and torch.equal(a.train.indices, b.train.indices)
    assert not torch.equal(a.val.indices, c.val.indices)
    assert len(load_dataset("cifar10", data_dir=str(root), val_fraction=0.25).val) == 25


@settings(max_examples=50, deadline=None)
@given(n=st.integers(2, 500), val_fraction=st.floats(0, 0.9), seed=st.integers(0, 2**31))
def test_split_train_val_partitions(n, val_fraction, seed):
    if round(n * val_fraction) >= n:  # nothing would be left to train on
        with pytest.raises(UserError, match="no training images"):
            split_train_val(n, val_fraction, seed)
        return
    train, val = split_train_val(n, val_fraction, seed)
    assert len(val) == round(n * val_fraction) and len(train) + len(val) == n
    assert sorted(train.tolist() + val.tolist()) == list(range(n))


def test_augmentation_only_on_train(cifar10):
    root, (train_data, _, test_data, _) = cifar10
    torch.manual_seed(0)
    splits = load_dataset("cifar10", data_dir=str(root), augment=True)
    changed = 0
    for k in range(len(splits.train)):
        image, _ = splits.train[k]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert image.min() >= 0 and image.max() <= 1
        changed += not torch.equal(image, _expected_image(train_data, int(splits.train.indices[k])))
    assert changed > len(splits.train) // 2  # identity is 1 of 162 crop/flip outcomes
    for dataset, data in ((splits.val, train_data), (splits.test, test_data)):
        for k in range(len(dataset)):
            for _ in range(3):
                assert torch.equal(dataset[k][0], _expected_image(data, int(dataset.indices[k])))


def test_train_items_batch_with_default_collate(cifar10):
    root, _ = cifar10
    splits = load_dataset("cifar10", data_dir=str(root))
    images, labels = next(iter(torch.utils.data.DataLoader(splits.train, batch_size=8)))
    assert images.shape == (8, 3, 32, 32) and labels.dtype == torch.int64


# ---------------------------------------------------------------- errors


def _assert_one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


def test_unknown_dataset():
    with pytest.raises(UserError) as error:
        load_dataset("mnist")
    assert _assert_one_line(error) == ("unknown dataset 'mnist'; choose from digits, mnist5k, cifar10, cifar100, "
                                       "cifar10dvs")
    assert DATASETS == ("digits", "mnist5k", "cifar10", "cifar100", "cifar10dvs")


@pytest.mark.parametrize("name,title,folder", [("cifar10", "CIFAR-10", "cifar-10-batches-py"),
                                               ("cifar100", "CIFAR-100", "cifar-100-python")])
def test_missing_directory(tmp_path, name, title, folder):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(UserError) as error:
        load_dataset(name, data_dir=missing)
    assert _assert_one_line(error) == (
        f"{title} not found in '{missing}' (expected {folder}/); pass --download or --data-dir")


def test_missing_file_named(cifar10):
    root, _ = cifar10
    (root / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(UserError, match="data_batch_4") as error:
        load_dataset("cifar10", data_dir=str(root))
    _assert_one_line(error)


def test_default_data_dir_is_dot_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"not found in '\./data'"):
        load_dataset("cifar10")
    _make_cifar(tmp_path / "data", "cifar10", np.random.default_rng(2))
    assert len(load_dataset("cifar10").test) == PER_BATCH


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("nested", [False, True], ids=["top-level", "inside-dict"])
def test_malicious_pickle_never_runs(cifar10, nested):
    root, _ = cifar10
    marker = root / "pwned"
    target = root / "cifar-10-batches-py" / "data_batch_1"
    payload = {b"data": _Evil(marker), b"labels": [0]} if nested else _Evil(marker)
    _write_pickle(target, payload)
    with pytest.raises(UserError) as error:
        load_dataset("cifar10", data_dir=str(root))
    assert str(target) in _assert_one_line(error)
    assert not marker.exists()


def test_truncated_file(cifar10):
    root, _ = cifar10
    target = root / "cifar-10-batches-py" / "data_batch_2"
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(UserError) as error:
        load_dataset("cifar10", data_dir=str(root))
    assert str(target) in _assert_one_line(error)


@pytest.mark.parametrize("batch,problem", [
    ({b"data": np.zeros((20, 3000), np.uint8), b"labels": [0] * 20}, "shape"),
    ({b"data": np.zeros((20, 3072), np.float32), b"labels": [0] * 20}, "uint8"),
    ({b"data": np.zeros((20, 3072), np.uint8), b"labels": [0] * 19}, "20 images but 19 labels"),
    ({b"data": np.zeros((20, 3072), np.uint8), b"labels": [10] * 20}, "labels must lie"),
    ({b"data": np.zeros((20, 3072), np.uint8)}, "no 'labels'"),
    ([1, 2, 3], "expected a dict"),
])
def test_wrong_contents_named(cifar10, batch, problem):
    root, _ = cifar10
    target = root / "cifar-10-batches-py" / "test_batch"
    _write_pickle(target, batch)
    with pytest.raises(UserError) as error:
        load_dataset("cifar10", data_dir=str(root))
    message = _assert_one_line(error)
    assert str(target) in message and problem in message


def test_bad_val_fraction(cifar10):
    root, _ = cifar10
    with pytest.raises(UserError, match="val_fraction"):
        load_dataset("cifar10", data_dir=str(root), val_fraction=1.0)


def test_download_failure_is_user_error(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure\nin name resolution")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(UserError, match="could not download CIFAR-10") as error:
        load_dataset("cifar10", data_dir=str(tmp_path), download=True)
    _assert_one_line(error)
