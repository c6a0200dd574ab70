"""A run's storage: the one place every node writes to, and all a new driver needs to continue the run.

Where: `storage.uri` (`--storage`). Unset, it is the output folder itself and nothing is copied. Otherwise a
local or NFS path, `s3://bucket/prefix` (`storage.endpoint` for S3-compatible stores, `storage.region`) or
`gs://bucket/prefix`, opened as a `pyarrow.fs` filesystem (the one Ray Tune writes its checkpoints through).
Its layout is the output folder's: `run.json`, `cache/`, `selected/`, `trials/<name>/`, `tune/`,
`comparison/`. Workers write their records, adapters and checkpoints there; the driver keeps a copy of what it
reads in the output folder (`pull`) and copies what it writes there to storage (`push`).

Credentials never pass through distill: pyarrow takes them from the environment (AWS_ACCESS_KEY_ID, ...,
GOOGLE_APPLICATION_CREDENTIALS) or the node's IAM role, on each node, and a filesystem built without explicit
keys pickles without them (it travels to the workers inside Tune's trainable). A URI that holds credentials is
refused.

Every file is stored with its checksum sidecar in distill.store.artifacts' format, so a reader can tell a whole
file from a damaged one on any backend: on a local path through distill.store.artifacts (temporary file + atomic
rename), on an object store as two objects (an object appears whole or not at all).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import shutil
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from distill.errors import DistillError
from distill.store import artifacts

REMOTE_SCHEMES = ("s3", "gs")
SHARED_FIX = "set --storage (storage.uri) to s3://bucket/prefix, gs://bucket/prefix or a path every node mounts (NFS)"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Storage:
    """A folder on a pyarrow filesystem (`root`), mirrored on the driver by the output folder (`local`)."""

    uri: str  # as configured, for messages and run.json
    fs: Any  # pyarrow.fs.FileSystem
    root: str  # the folder inside `fs`: an absolute path, or bucket/prefix
    local: Path  # the run's output folder on the driver

    @property
    def remote(self) -> bool:
        """An object store rather than a path on this machine (or a mount of it)."""
        return self.fs.type_name != "local"

    @property
    def mirrored(self) -> bool:
        """Storage is the output folder itself: pushing and pulling would copy files onto themselves."""
        return not self.remote and Path(self.root) == self.local.resolve()

    def path(self, rel: str = "") -> str:
        """The filesystem path of `rel` (a '/'-separated path inside storage)."""
        return posixpath.join(self.root, rel) if rel else self.root

    def relative(self, path: str) -> str:
        """Inverse of `path`: what Tune reports (a checkpoint's path) as a path inside storage."""
        return posixpath.relpath(path, self.root)

    def exists(self, rel: str) -> bool:
        from pyarrow.fs import FileType

        return self.fs.get_file_info(self.path(rel)).type != FileType.NotFound

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Store `data` at `rel` with its checksum sidecar."""
        if not self.remote:
            artifacts.write_bytes(Path(self.path(rel)), data)
            return
        for name, payload in ((rel, data), (rel + artifacts.SIDECAR, artifacts.seal_of(data))):
            with self.fs.open_output_stream(self.path(name)) as out:
                out.write(payload)

    def write_json(self, rel: str, value: Any, **dumps: Any) -> None:
        self.write_bytes(rel, json.dumps(value, **dumps).encode())

    def write_jsonl(self, rel: str, rows: Iterable[dict]) -> None:
        self.write_bytes(rel, "".join(json.dumps(row) + "\n" for row in rows).encode())

    def read_bytes(self, rel: str) -> bytes | None:
        """The bytes at `rel` when they match their sidecar; None when absent, unsealed or damaged (named in a
        warning, as distill.store.artifacts does: the caller recomputes them)."""
        if not self.remote:
            path = Path(self.path(rel))
            return path.read_bytes() if artifacts.intact(path) else None
        try:
            data, seal = (self._get(name) for name in (rel, rel + artifacts.SIDECAR))
        except FileNotFoundError:
            return None
        if json.loads(artifacts.seal_of(data)) != json.loads(seal):
            log.warning(
                "damaged object %s: it does not match its checksum; ignoring it and recomputing", self.path(rel)
            )
            return None
        return data

    def read_json(self, rel: str) -> Any:
        data = self.read_bytes(rel)
        return None if data is None else json.loads(data)

    def _get(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as stream:
            return stream.read()

    def names(self, rel: str) -> list[str]:
        """The names directly inside folder `rel`, sorted (none when it does not exist)."""
        from pyarrow.fs import FileSelector

        infos = self.fs.get_file_info(FileSelector(self.path(rel), allow_not_found=True))
        return sorted(posixpath.basename(info.path) for info in infos)

    def delete(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self.path(rel))

    def upload(self, source: Path, rel: str) -> None:
        """Copy a local file or folder to `rel` (a folder's files keep their sidecars)."""
        from pyarrow.fs import LocalFileSystem, copy_files

        folder = self.path(rel) if Path(source).is_dir() else posixpath.dirname(self.path(rel))
        self.fs.create_dir(folder, recursive=True)  # a local destination must exist; an object store ignores it
        copy_files(str(source), self.path(rel), source_filesystem=LocalFileSystem(), destination_filesystem=self.fs)

    def download(self, rel: str, target: Path) -> bool:
        """Copy the file or folder at `rel` to `target` (replacing it); False when storage has none.

        It lands under a temporary name first and is renamed into place, so a driver killed half-way never
        leaves a partial folder that looks like a cache."""
        from pyarrow.fs import FileType, LocalFileSystem, copy_files

        kind = self.fs.get_file_info(self.path(rel)).type
        if kind == FileType.NotFound:
            return False
        target = Path(target)
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        (partial if kind == FileType.Directory else partial.parent).mkdir(parents=True, exist_ok=True)
        copy_files(self.path(rel), str(partial), source_filesystem=self.fs, destination_filesystem=LocalFileSystem())
        if target.is_dir():
            shutil.rmtree(target)
        partial.replace(target)
        return True

    def push(self, rel: str) -> None:
        """The driver's copy of `rel` (a file with its sidecar, or a folder) under the output folder to storage;
        nothing to do when storage is the folder."""
        if self.mirrored:
            return
        for name in (rel, rel + artifacts.SIDECAR):
            if (self.local / name).exists():
                self.upload(self.local / name, name)

    def pull(self, rel: str) -> bool:
        """Storage's copy of `rel` (a file with its sidecar, or a folder) into the output folder: a resumed driver
        on another machine starts with none. True when storage had it."""
        if self.mirrored or not self.download(rel, self.local / rel):
            return False
        self.download(rel + artifacts.SIDECAR, self.local / (rel + artifacts.SIDECAR))
        return True

    def fetched(self, rel: str, intact: Callable[[Path], bool] = artifacts.intact) -> bool:
        """Whether the output folder holds an intact `rel` (`intact` checks it), pulling storage's copy first when
        it does not: a driver continuing the run on another machine starts with an empty folder."""
        path = self.local / rel
        return intact(path) or (self.pull(rel) and intact(path))

    def sees(self, rel: str) -> str | None:
        """None when `rel` (a marker the driver wrote) is visible from here, else why not: run on every node."""
        try:
            return None if self.exists(rel) else f"{self.path(rel)} does not exist there"
        except OSError as exc:
            return str(exc).splitlines()[0]

    def marker(self) -> str:
        """Write a uniquely named empty marker (the caller deletes it) and return its path inside storage."""
        name = f".distill-visible-{uuid.uuid4().hex}"
        with self.fs.open_output_stream(self.path(name)) as out:
            out.write(b"")
        return name


def open_storage(
    out: Path, uri: str | None = None, endpoint: str | None = None, region: str | None = None, anonymous: bool = False
) -> Storage:
    """The storage `uri` names (None: the output folder `out`), checked without touching it."""
    out = Path(out).expanduser().resolve()
    if not uri:
        return Storage(str(out), _local_fs(), str(out), out)
    parts = urlsplit(uri)
    scheme = parts.scheme.lower() if "://" in uri else ""
    if scheme in ("", "file"):
        if endpoint or region or anonymous:
            raise DistillError(
                f"storage.endpoint/region/anonymous are set but storage {uri} is a local path, so they would be ignored",
                "drop them, or set --storage to s3://bucket/prefix",
            )
        path = Path(parts.path if scheme else uri).expanduser().resolve()
        return Storage(str(path), _local_fs(), str(path), out)
    if scheme not in REMOTE_SCHEMES:
        raise DistillError(
            f"storage {uri}: scheme '{scheme}://' is not supported",
            "use a local or NFS path, s3://bucket/prefix or gs://bucket/prefix",
        )
    for name, value in (("storage.uri", uri), ("storage.endpoint", endpoint)):
        if value and ("@" in urlsplit(value).netloc or urlsplit(value).query):
            raise DistillError(
                f"{name} holds credentials or options ({urlsplit(value).scheme}://…@… or ?…), "
                "which would be stored in run.json",
                "give credentials through the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
                "GOOGLE_APPLICATION_CREDENTIALS) or the node's IAM role, and the endpoint as "
                "storage.endpoint",
            )
    if not parts.netloc:
        raise DistillError(f"storage {uri} names no bucket", f"write it as {scheme}://bucket/prefix")
    root = f"{parts.netloc}/{parts.path.strip('/')}".rstrip("/")
    return Storage(uri.rstrip("/"), _remote_fs(scheme, endpoint, region, anonymous), root, out)


def _local_fs():
    from pyarrow.fs import LocalFileSystem

    return LocalFileSystem()


def _remote_fs(scheme: str, endpoint: str | None, region: str | None, anonymous: bool):
    """pyarrow's S3 or GCS filesystem, with the endpoint of an S3-compatible store (or a GCS emulator) when given.
    No keys are passed: pyarrow's default credential chain finds them on each node, unless `anonymous` (a store
    that takes none, such as a GCS emulator: GCS's chain fails without credentials even where none are needed)."""
    from pyarrow import fs

    options: dict[str, Any] = {"anonymous": anonymous}
    if endpoint:
        url = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options.update(endpoint_override=url.netloc, scheme=url.scheme)
    if scheme == "gs":
        return fs.GcsFileSystem(**options)
    return fs.S3FileSystem(region=region, **options)


def check_reachable(storage: Storage) -> None:
    """Fail in a second, before any work, when storage cannot be written: no such bucket, no credentials, a wrong
    endpoint. Writes and deletes one small marker object."""
    if storage.mirrored:
        return  # the output folder: distill.store.outdir checks it
    try:
        storage.fs.create_dir(storage.root, recursive=True)
        storage.delete(storage.marker())
    except OSError as exc:
        raise DistillError(
            f"storage {storage.uri} cannot be written: {str(exc).splitlines()[0][:300]}",
            "check the bucket exists, storage.endpoint / storage.region, and that this machine has "
            "credentials (environment variables or an IAM role)",
        ) from None
