"""Every file spikeguard writes goes through here, so each one is written the same durable way.

A write fills a temporary file in the target's directory (named ``.NAME.XXXXXXXX.tmp``), flushes and fsyncs
it, renames it over the target (atomic) and fsyncs the directory (so a power cut cannot undo the rename). A
crash or a full disk at any point leaves the previous file or the new one, never a mix. A failed write
removes the temporary file and is a one-line UserError saying the previous file is intact.

A new file's mode follows the user's umask (0o666 & ~umask), as a plain ``open`` would give it; ``private``
makes it 0o600.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from spikeguard.errors import UserError

Writer = Callable[[BinaryIO], Any]


def write_bytes(path: str | Path, data: bytes | Writer, *, private: bool = False) -> None:
    """Replace ``path`` with ``data`` (bytes, or a function writing to a binary file object) durably,
    creating its directory if need be."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace(write_temporary(path, data, private=private), path)


def write_text(path: str | Path, text: str, *, private: bool = False) -> None:
    write_bytes(path, text.encode(), private=private)


def write_json(path: str | Path, data: Any, *, private: bool = False) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n", private=private)


def write_temporary(path: Path, data: bytes | Writer, *, private: bool = False) -> Path:
    """A fsynced temporary file beside ``path`` holding ``data``, for ``replace`` to move into place. A failed
    write removes it and is a UserError (a full disk among them). Split from ``replace`` so a caller can do
    other renames in between (checkpoint rotation)."""
    write = data if callable(data) else (lambda f: f.write(data))
    tmp = _create_temporary(path, 0o600 if private else 0o666)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        cause = _os_error(e)
        if cause is None:
            raise
        raise UserError(f"could not write '{path}' ({cause.strerror or cause}); "
                        "the previous file there is intact") from None
    return tmp


def _create_temporary(path: Path, mode: int) -> Path:
    """A new empty file ``.NAME.XXXXXXXX.tmp`` beside ``path``, created with ``mode`` less the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, flags, mode)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary file name beside '{path}'")


def _os_error(e: BaseException | None) -> OSError | None:
    """The OSError behind ``e``: torch.save reports a failed write as a RuntimeError caused by it."""
    while e is not None:
        if isinstance(e, OSError):
            return e
        e = e.__cause__ or e.__context__
    return None


def replace(tmp: Path, path: Path) -> None:
    """Rename the finished temporary file ``tmp`` over ``path``, durably."""
    os.replace(tmp, path)
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable: without it a power cut can undo the rename."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the rename itself is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def append_line(path: Path, line: str) -> None:
    """Append ``line`` and a newline to ``path`` durably (flushed and fsynced before returning). An OSError
    (a full disk) is the caller's to turn into advice."""
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())
