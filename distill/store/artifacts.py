"""Artifacts on disk: written atomically, checked when read back.

A crash (or a kill) at any moment must leave either the previous file or the new one, never a
half-written file that a rerun takes for a result. So every artifact is written to a temporary
file in the same folder, fsynced, and renamed over the target (`os.replace` is atomic on POSIX).
Then a sidecar `<name>.sha256` records the file's SHA-256 and size; a reader calls `intact()`,
which names a truncated, corrupted or unsealed file in a warning so the caller recomputes it.
The helpers are generic (`atomic_write(path, writer)`, `seal(path)`, `verify(path)`) so any
file format can use them; `write_text/json/jsonl/npz` are the formats distill writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np

SIDECAR = ".sha256"  # suffix of the checksum file next to each artifact
NEW_FILE_MODE = 0o666  # what open() asks for; the umask takes away the rest, as for any file the user creates
TEMP_NAME_BYTES = 6  # random bytes in a temporary file's name: collisions between concurrent writers are negligible
CHUNK = 1 << 20  # bytes hashed per read: big artifacts (feature caches) are streamed, never loaded whole

log = logging.getLogger(__name__)


def content_hash(parts: dict[str, Any]) -> str:
    """Short, stable hash of JSON-able settings: the key of every cached artifact."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def atomic_write(path: Path, writer: Callable[[IO[bytes]], None]) -> None:
    """Call `writer(fh)` on a temporary file next to `path`, fsync it, then rename it over `path`.

    If `writer` raises (or the process dies), `path` still holds its previous content; the
    temporary file is removed on an exception and hidden (`.name.*.tmp`) if the process is killed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _create_temp(path: Path) -> tuple[int, str]:
    """A new hidden temporary file beside `path`, open for writing, created as `open()` creates files: mode
    0666 less the umask (0644 under the usual 022). tempfile.mkstemp's 0600 would survive the rename, and a
    result the user shares would be unreadable to the group that can read the rest of the run."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(TEMP_NAME_BYTES)}.tmp"
        try:
            return os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, NEW_FILE_MODE), str(tmp)
        except FileExistsError:  # another writer's temporary file of the same name: draw another
            continue


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (the directory entry), not only the file's bytes."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sidecar(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + SIDECAR)


def digest(path: Path) -> dict[str, Any]:
    """SHA-256 and size of a file, streamed."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            sha.update(block)
    return {"sha256": sha.hexdigest(), "size": Path(path).stat().st_size}


def seal(path: Path) -> None:
    """Record `path`'s checksum in its sidecar (atomically): from now on `verify` can tell if it changed."""
    record = json.dumps(digest(path), sort_keys=True).encode()
    atomic_write(sidecar(path), lambda fh: fh.write(record))


def seal_of(data: bytes) -> bytes:
    """The sidecar `seal` writes for a file holding `data`: how distill.store.storage seals an object it uploads."""
    return json.dumps({"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}, sort_keys=True).encode()


def write(path: Path, writer: Callable[[IO[bytes]], None]) -> None:
    """Atomic write, then seal. A crash between the two leaves a file its sidecar disowns: recomputed.

    Replacing a damaged earlier copy is named in a warning, so no damage goes unreported.
    """
    problem = verify(path) if Path(path).exists() else None
    atomic_write(path, writer)
    seal(path)
    if problem:
        log.warning("damaged artifact %s (%s) replaced by a recomputed one", path, problem)


def verify(path: Path) -> str | None:
    """Why `path` cannot be trusted (missing, unsealed, size or hash mismatch), or None when intact."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    try:
        recorded = json.loads(sidecar(path).read_text())
        size, sha = int(recorded["size"]), str(recorded["sha256"])
    except FileNotFoundError:
        return f"no checksum file {sidecar(path).name} (written by an interrupted or older run)"
    except (ValueError, KeyError, TypeError):
        return f"checksum file {sidecar(path).name} is damaged"
    actual = path.stat().st_size
    if actual != size:
        return f"size {actual} bytes, expected {size} (truncated or overwritten)"
    if digest(path)["sha256"] != sha:
        return "SHA-256 does not match its checksum file (corrupted)"
    return None


def intact(path: Path) -> bool:
    """True when `path` exists and matches its checksum; a damaged file is named in a warning."""
    path = Path(path)
    if not path.exists():
        return False
    problem = verify(path)
    if problem:
        log.warning("damaged artifact %s: %s; ignoring it and recomputing", path, problem)
        return False
    return True


# ------------------------------------------------------------------------------- formats


def write_bytes(path: Path, data: bytes) -> None:
    write(path, lambda fh: fh.write(data))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, value: Any, **dumps: Any) -> None:
    write_text(path, json.dumps(value, **dumps))


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    write(path, lambda fh: np.savez(fh, **arrays))
