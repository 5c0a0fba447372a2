"""The one atomic writer: modes, atomic replacement, failures that keep the previous file, fsync."""

import errno
import json
import os
import stat

import pytest
import torch

import spikeguard.files as files
from spikeguard.errors import UserError


@pytest.fixture
def umask():
    """Set the process umask for one test and put the old one back."""
    before = os.umask(0o022)
    yield lambda value: os.umask(value)
    os.umask(before)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_a_new_file_mode_follows_the_umask(tmp_path, umask, mask):
    umask(mask)
    files.write_text(tmp_path / "a.txt", "x")
    files.write_bytes(tmp_path / "b.bin", b"x")
    files.write_json(tmp_path / "c.json", {})
    for name in ("a.txt", "b.bin", "c.json"):
        assert mode(tmp_path / name) == 0o666 & ~mask


def test_private_files_are_0600(tmp_path, umask):
    umask(0o002)
    files.write_text(tmp_path / "secret.txt", "x", private=True)
    assert mode(tmp_path / "secret.txt") == 0o600


def test_content_is_replaced_whole_and_no_temporary_is_left(tmp_path):
    path = tmp_path / "sub" / "r.json"  # the directory is created
    files.write_json(path, {"a": 1})
    files.write_json(path, {"b": [1, 2]})
    assert json.loads(path.read_text()) == {"b": [1, 2]}
    assert path.read_text().endswith("\n")
    files.write_bytes(path, lambda f: f.write(b"from a writer"))
    assert path.read_bytes() == b"from a writer"
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.json"]


def test_temporary_files_are_named_after_the_target(tmp_path):
    tmp = files.write_temporary(tmp_path / "last.pt", b"x")
    assert tmp.parent == tmp_path and tmp.name.startswith(".last.pt.") and tmp.name.endswith(".tmp")
    assert tmp.name.split(".")[1] == "last"  # what resume's clean-up of stale temporaries keys on
    files.replace(tmp, tmp_path / "last.pt")
    assert (tmp_path / "last.pt").read_bytes() == b"x"


def full_disk(f):
    f.write(b"partial")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def torch_full_disk(f):
    try:
        full_disk(f)
    except OSError as e:  # how torch.save reports a failed write
        raise RuntimeError("PytorchStreamWriter failed writing file data/0") from e


@pytest.mark.parametrize("writer", [full_disk, torch_full_disk])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, writer):
    path = tmp_path / "out.bin"
    files.write_bytes(path, b"old")
    with pytest.raises(UserError) as err:
        files.write_bytes(path, writer)
    assert "No space left on device" in str(err.value) and "previous file there is intact" in str(err.value)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_an_error_that_is_not_about_the_disk_is_raised_as_it_is(tmp_path):
    def broken(f):
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        files.write_bytes(tmp_path / "x", broken)
    assert list(tmp_path.iterdir()) == []


def test_a_torch_save_goes_through_the_writer(tmp_path):
    files.write_bytes(tmp_path / "t.pt", lambda f: torch.save({"w": torch.ones(2)}, f))
    assert torch.equal(torch.load(tmp_path / "t.pt", weights_only=True)["w"], torch.ones(2))


def test_the_file_and_its_directory_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    files.write_text(tmp_path / "a.txt", "x")
    assert synced == [False, True]  # the file before the rename, the directory after it
    files.append_line(tmp_path / "m.jsonl", "{}")
    assert synced == [False, True, False] and (tmp_path / "m.jsonl").read_text() == "{}\n"
