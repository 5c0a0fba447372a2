"""One writer per output: a run claims its ``--out`` before it checks and writes it.

A claim is a lock file beside the output, made atomically (a complete file hard-linked into place, which
fails if one is there; where a file system cannot link, created with O_EXCL), so of two runs started into the
same place exactly one gets it and the other stops with one line naming the holder:

- a run directory (``train``, ``analyze``): ``DIR/.spikeguard.lock`` (DIR is made if need be, and removed
  again on release if the claim made it and it is still empty);
- a results file ``R.json`` (``evaluate``, which also writes ``R.csv``): ``.R.json.lock`` in its folder.

The lock holds JSON: host, pid, started (UTC, ISO), command line, and a token of its own. It is removed when
the claim ends (also on an error or Ctrl-C); a killed run leaves it behind. Finding a lock, a claim

- by a live process on this host (``os.kill(pid, 0)`` succeeds): always refuses;
- by a process gone on this host: refuses unless ``take_over`` (what ``--resume`` passes) or ``other_host``;
- from another host (a shared file system; whether that process lives cannot be told from here): refuses
  unless ``other_host`` (``--take-over-lock``: the user knows that run is dead).

A process id reused since by an unrelated live process counts as alive (refusing is the safe side). Under
torchrun only rank 0 claims; the others proceed, and rank 0's refusal is raised on every rank.

The checks that the output is new ("already exists") run after the claim, as ``check``, so two racing runs
cannot both pass them.

This module imports neither torch nor the training loop.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from spikeguard.errors import UserError
from spikeguard.files import fsync_directory

DIR_LOCK = ".spikeguard.lock"
TAKE_OVER_FLAG = "--take-over-lock"
TAKE_OVER_HELP = ("Take over the lock on --out left by a run on another host (a shared file system); only when "
                  "that run is known to be dead.")


def lock_path(target: str | Path, directory: bool) -> Path:
    """The lock file of ``target``: inside it for a directory, ``.NAME.lock`` beside it for a file."""
    target = Path(target)
    return target / DIR_LOCK if directory else target.with_name(f".{target.name}.lock")


def is_lock_file(name: str) -> bool:
    """A run directory's lock or the temporary file a claim links it from (an empty directory may hold them)."""
    return name == DIR_LOCK or (name.startswith(DIR_LOCK + ".") and name.endswith(".tmp"))


@dataclass
class Claim:
    """A held claim (``lock`` None: nothing held, e.g. on a rank other than 0). A context manager; ``release``
    may be called more than once."""

    lock: Path | None = None
    token: str = ""
    made_dir: Path | None = None

    def release(self) -> None:
        if self.lock is None:
            return
        lock, self.lock = self.lock, None
        try:
            if _read(lock).get("token") == self.token:  # not a lock someone took over since
                lock.unlink()
        except (OSError, UserError):
            pass
        if self.made_dir is not None:
            try:
                self.made_dir.rmdir()  # only if still empty
            except OSError:
                pass

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def claim(target: str | Path, *, directory: bool = False, take_over: bool = False, other_host: bool = False,
          check: Callable[[], Any] | None = None) -> Claim:
    """Claim ``target`` for this run (see the module's text); ``check`` runs once the claim is held (a refusal
    it raises releases the claim). Under torchrun only rank 0 claims: after the process group is joined its
    UserError is raised on every rank; before, the other ranks get an empty Claim at once."""
    args = (Path(target), directory, take_over, other_host, check)
    if _env_int("WORLD_SIZE", 1) > 1:
        from spikeguard.distributed import context, on_main

        if context().distributed:
            return on_main(_claim, *args) or Claim()
        if _env_int("RANK", 0) != 0:
            return Claim()
    return _claim(*args)


def _claim(target: Path, directory: bool, take_over: bool, other_host: bool,
           check: Callable[[], Any] | None) -> Claim:
    if "\0" in str(target):
        raise UserError("output path contains a NUL character")
    lock = lock_path(target, directory)
    made_dir = None  # a directory new to this claim (made by it or a racing one) goes again with the claim
    if directory and not target.exists():
        made_dir = target
        try:
            target.mkdir(parents=True)
        except FileExistsError:  # a racing run made it: the lock decides
            pass
        except OSError as e:
            raise UserError(f"cannot create '{target}' ({e.strerror or e})") from None
    elif not directory:
        try:  # a results file may go into a folder yet to be made, as its writer allows
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create '{target.parent}' ({e.strerror or e})") from None
    token = secrets.token_hex(8)
    record = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": shlex.join(sys.argv), "token": token}
    held = Claim(None, token, made_dir)
    try:
        for _ in range(20):
            if _create(lock, record):
                break
            holder = _read(lock)
            if not holder:  # released between our attempt and our read: try again
                continue
            _refuse_unless_takeable(target, lock, holder, take_over, other_host)
            _remove_stale(lock, holder)
        else:
            raise UserError(f"could not claim '{target}': its lock '{lock}' keeps changing; is another run "
                            "starting there?")
        held.lock = lock
        if check is not None:
            check()
    except BaseException:
        held.release()  # not a directory a racing winner is about to lock, unless this claim held it
        raise
    return held


def lock_holder(target: str | Path, *, directory: bool = False) -> tuple[dict, str] | None:
    """Who holds ``target``'s lock, and whether it lives: "alive", "gone" (a dead process on this host) or
    "unknown" (another host); None when no lock is there. Read-only: for status displays."""
    holder = _read(lock_path(target, directory))
    if not holder:
        return None
    if holder["host"] != socket.gethostname():
        return holder, "unknown"
    return holder, "alive" if _alive(holder["pid"]) else "gone"


def _create(lock: Path, record: dict) -> bool:
    """Put a complete lock file at ``lock`` unless one is there (False then). A link is atomic and never
    shows a half-written file; O_EXCL is the fallback where links are not supported."""
    data = (json.dumps(record) + "\n").encode()
    tmp = lock.with_name(f"{lock.name}.{secrets.token_hex(4)}.tmp")
    try:
        _write_new(tmp, data)
    except OSError as e:
        raise UserError(f"cannot write the lock '{lock}' ({e.strerror or e})") from None
    try:
        os.link(tmp, lock)
        fsync_directory(lock.parent)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here (some file systems)
        try:
            _write_new(lock, data)
            return True
        except FileExistsError:
            return False
        except OSError as e:
            raise UserError(f"cannot write the lock '{lock}' ({e.strerror or e})") from None
    finally:
        tmp.unlink(missing_ok=True)


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(lock: Path) -> dict:
    """The lock's record; {} if there is none (any more); a UserError if it is not a spikeguard lock."""
    try:
        text = lock.read_text()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the lock file '{lock}' ({getattr(e, 'strerror', None) or e}); delete it if "
                        "no run is writing there") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        record = None
    if not (isinstance(record, dict) and isinstance(record.get("host"), str) and type(record.get("pid")) is int):
        raise UserError(f"lock file '{lock}' is not a spikeguard lock (corrupt?); delete it if no run is "
                        "writing there")
    return record


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # another user's process; a nonsense pid is no process
    return pid > 0


def _refuse_unless_takeable(target: Path, lock: Path, holder: dict, take_over: bool, other_host: bool) -> None:
    who = f"pid {holder['pid']} on host {holder['host']} since {holder.get('started', '?')}"
    if holder["host"] != socket.gethostname():
        if other_host:
            return
        raise UserError(f"'{target}' is locked by a run on another host ({who}; lock '{lock}'); if that run is "
                        f"dead, pass {TAKE_OVER_FLAG} to take the lock over")
    if _alive(holder["pid"]):
        raise UserError(f"'{target}' is in use by another run ({who}; lock '{lock}'); wait for it to end or "
                        "choose another --out")
    if not (take_over or other_host):
        raise UserError(f"'{target}' is locked by a run that is gone ({who}; lock '{lock}'); --resume takes it "
                        f"over where the command has one, else delete '{lock}'")


def _remove_stale(lock: Path, holder: dict) -> None:
    """Remove the lock ``holder`` left, unless another run took it over meanwhile: moved aside first (only one
    of two racing takers can move it), put back if it turns out to be a newer lock."""
    aside = lock.with_name(f"{lock.name}.{secrets.token_hex(4)}.stale.tmp")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return
    try:
        moved = _read(aside)
    except UserError:
        moved = {}
    if moved.get("token") == holder.get("token"):
        aside.unlink(missing_ok=True)
        return
    try:  # a fresh lock of a run that raced us: put it back and let the next round report it
        os.link(aside, lock)
    except OSError:
        pass
    aside.unlink(missing_ok=True)


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default
