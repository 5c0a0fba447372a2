"""Provenance helpers the evaluator stores in results.json: file hash, code version, library versions."""

import hashlib
import importlib.metadata
import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import spikeguard
from spikeguard import provenance
from spikeguard.provenance import code_version, file_sha256, library_versions

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def test_file_sha256_reads_in_chunks_and_sees_one_changed_byte(tmp_path):
    data = bytearray(np.random.default_rng(0).integers(0, 256, (5 << 20) // 2, dtype=np.uint8).tobytes())
    path = tmp_path / "blob"
    path.write_bytes(bytes(data))
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


@needs_git
def test_code_version_names_the_commit_of_this_checkout():
    root = Path(spikeguard.__file__).resolve().parents[1]
    inside = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                            check=False)
    if inside.returncode != 0 or Path(inside.stdout.strip()).resolve() != root:
        pytest.skip("spikeguard is not imported from a git checkout here")
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    code_version.cache_clear()  # cached per process; others may have committed since
    assert code_version().startswith(f"{spikeguard.__version__}+g{head}")


@needs_git
def test_another_projects_checkout_does_not_lend_its_commit(tmp_path):
    repo = tmp_path / "project"
    package = repo / "vendor" / "spikeguard"
    package.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    assert provenance._git_commit(package) is None  # a git checkout, but not spikeguard's own
    assert provenance._git_commit(tmp_path / "nowhere" / "spikeguard") is None  # no checkout at all


def test_library_versions_name_the_running_libraries(monkeypatch):
    versions = library_versions()
    assert versions["python"] == platform.python_version()
    assert versions["torch"] == torch.__version__ and versions["numpy"] == np.__version__
    for name in provenance.OPTIONAL_LIBRARIES:  # torchattacks is no longer in the test environment
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            assert name not in versions
        else:
            assert versions[name] == installed
    monkeypatch.setattr(provenance, "OPTIONAL_LIBRARIES", ("surely-not-installed-package",))
    assert "surely-not-installed-package" not in library_versions()
