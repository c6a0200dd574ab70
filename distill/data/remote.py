"""Data kept in an object store: `--data s3://bucket/train.jsonl` (or gs://, a file or a folder of shards) is read
through the storage layer that `--storage` writes through (distill/store/storage.py: pyarrow's S3 and GCS clients,
with the storage section's endpoint, region and anonymous settings and the environment's credentials), copied to
the machine-wide cache and then read like a local file. Without this, the URI was taken for a local path.
"""

from __future__ import annotations

import dataclasses
import posixpath
from urllib.parse import urlsplit

from distill.config.env import cache_root
from distill.config.schema import DataConfig, StorageConfig
from distill.errors import DistillError
from distill.store.artifacts import content_hash
from distill.store.storage import REMOTE_SCHEMES, open_storage

DATA_CACHE = "data"  # under cache_root(): one folder per source URI, refreshed on every run


def is_remote(source: str) -> bool:
    """A data source in an object store (s3://, gs://)."""
    return "://" in source and urlsplit(source).scheme.lower() in REMOTE_SCHEMES


def readable(data: DataConfig, storage: StorageConfig) -> DataConfig:
    """`data`, with a source in an object store replaced by a fresh local copy of it (any other source as it is).

    The copy is made again on every call: an object that changed must not be read from an older copy (the data
    fingerprint, computed from the rows, then tells every cache that the data changed)."""
    if not is_remote(data.source):
        return data
    parent, name = posixpath.split(data.source.rstrip("/"))
    folder = cache_root() / DATA_CACHE / content_hash({"source": data.source})
    store = open_storage(folder, parent, storage.endpoint, storage.region, storage.anonymous)
    try:
        found = store.download(name, folder / name)
    except OSError as exc:
        raise DistillError(
            f"data {data.source} cannot be read: {str(exc).splitlines()[0][:300]}",
            "check the bucket and key, storage.endpoint / storage.region (--set storage.endpoint=URL), and that "
            "this machine has credentials (environment variables or an IAM role)",
        ) from None
    if not found:
        raise DistillError(
            f"data {data.source} does not exist",
            "check the bucket and key passed to --data (list them with `aws s3 ls` or `gcloud storage ls`)",
        )
    return dataclasses.replace(data, source=str(folder / name))
