"""Where a result came from: the hash of a file, the code version, and the library versions.

Results and checkpoints carry these so two numbers can be traced to the exact weights and code that made them.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import platform
import subprocess
from pathlib import Path

import numpy as np
import torch

import spikeguard

# Attack libraries the evaluator may use; recorded only when installed.
OPTIONAL_LIBRARIES = ("pyautoattack", "torchattacks")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks so a large checkpoint is never held in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The package version, plus "+g<commit>" (and ".dirty" when the package's files differ from that commit)
    when the package is imported from a git checkout of spikeguard itself; else the version alone."""
    version = spikeguard.__version__
    commit = _git_commit(Path(spikeguard.__file__).resolve().parent)
    return f"{version}+g{commit}" if commit else version


def _git_commit(package_dir: Path) -> str | None:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(package_dir), *args], capture_output=True, text=True,
                                  timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):  # no git, or it hangs: the version alone will do
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    # Only spikeguard's own repository counts: an installed copy inside some other project's checkout
    # (a venv in a user's repository) must not report that project's commit.
    if top is None or Path(top).resolve() != package_dir.parent:
        return None
    commit = git("rev-parse", "--short=12", "HEAD")
    if commit is None:
        return None
    changed = git("status", "--porcelain", "--untracked-files=no", "--", str(package_dir))
    return f"{commit}.dirty" if changed else commit


def library_versions() -> dict[str, str]:
    """Versions of Python, torch and numpy, the CUDA torch was built with (when it was), and the optional
    attack libraries that are installed."""
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    if torch.version.cuda is not None:
        versions["cuda"] = torch.version.cuda
    for name in OPTIONAL_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


@functools.lru_cache(maxsize=1)
def machine_description() -> str:
    """The CPU's model name and logical core count, and the GPU where CUDA is available: what a wall time was
    measured on ("Intel(R) Xeon(R) ... , 2 logical CPUs, no GPU")."""
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass  # not Linux: platform's answer stands
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} logical CPUs, {gpu}"
