"""The output folder: refuse one that is foreign or unwritable, and let one run at a time write to it.

`check` runs before any work and changes nothing on disk, so a refused run leaves the folder as it
was. `claim` holds `<out>/.distill.lock` for the whole run: an exclusive `flock` on it (released by
the kernel when the process dies, however it dies) plus the holder's PID, so a second run into the
same folder is refused with a line naming the run that holds it, and a lock file left by a killed
run is taken over with a warning. Names that become paths under the folder (job name, method
names, trial names) are checked by `safe_name` so none can escape it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from distill.errors import DistillError

LOCK = ".distill.lock"
MARKERS = ("run.json", LOCK, "logs/run.log")  # a non-empty folder holding none was not written by distill
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
# A method's run at one seed: `-s` in every name (trials/random-s1/, selected/random-s1.jsonl); selected files
# written before the spelling was one said `-seed` (random-seed1.jsonl), and read the same.
_SEEDED = re.compile(r"^(?P<method>.+)-(?:s|seed)(?P<seed>\d+)$")

log = logging.getLogger(__name__)


def safe_name(kind: str, name: str) -> str:
    """`name` if it can be one path component under the output folder (no '/', '..', hidden names)."""
    if not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise DistillError(
            f"{kind} '{name}' cannot be used as a file name inside the output folder",
            f"use letters, digits and _ . + - only (starting with a letter or digit) for the {kind}",
        )
    return name


def seeded_name(method: str, seed: int) -> str:
    """The one spelling of a method's run at a seed: its trial's name and folder, its selected file's stem."""
    return f"{method}-s{seed}"


def method_of(name: str) -> str:
    """The method of a seeded name (random-s1, or the older random-seed1 → random); any other name is one."""
    match = _SEEDED.match(name)
    return match.group("method") if match else name


def check(out: Path) -> None:
    """Refuse an output path that is a file, a foreign non-empty folder, or not writable. Writes nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DistillError(f"output path {out} is a file, not a folder", "pass --output-dir a new or empty folder")
    if out.is_dir() and any(out.iterdir()) and not any((out / m).exists() for m in MARKERS):
        raise DistillError(
            f"output folder {out} is not empty and was not written by distill (it has no run.json)",
            "pass --output-dir a new or empty folder, or the folder of an earlier distill run",
        )
    _probe_writable(out)


def _probe_writable(out: Path) -> None:
    """Create (and drop) an unnamed file in the folder, or in its nearest existing parent."""
    where = out
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        if not where.is_dir():
            raise NotADirectoryError(f"{where} is not a folder")
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise DistillError(
            f"output folder {out} cannot be written ({where}: {reason})", "pass --output-dir a folder you can write to"
        ) from None


@contextlib.contextmanager
def claim(out: Path) -> Iterator[None]:
    """Create the output folder and hold its lock for the duration of the run."""
    out = Path(out)
    check(out)
    out.mkdir(parents=True, exist_ok=True)
    handle = _acquire(out / LOCK)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            (out / LOCK).unlink()
        handle.close()  # releases the flock


def _acquire(path: Path) -> IO[str]:
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            handle.close()
            raise DistillError(
                f"output folder {path.parent} is in use by another distill run ({holder}; lock {path})",
                "wait for that run to finish or stop it, or pass a different --output-dir",
            ) from None
        if path.exists() and os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
            break
        handle.close()  # the holder removed the lock file between our open and flock: take the new one
    previous = _holder(handle)
    if previous != "unknown process":
        log.warning("taking over the stale lock %s of %s, which is no longer running", path, previous)
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    handle.flush()
    return handle


def _holder(handle: IO[str]) -> str:
    """Who wrote the lock file ('pid N on HOST since T'), as far as its content says."""
    handle.seek(0)
    return handle.read().strip() or "unknown process"
