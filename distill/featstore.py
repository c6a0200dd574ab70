"""The features cache on disk: embeddings and summary loss streamed batch by batch into memory-mapped
files, and read back memory-mapped.

Why: at a million rows the driver must never hold the pool's embeddings twice (the old path kept
every Ray Data batch in a list, then concatenated and re-ordered them: three copies at its peak).
Here each batch is written straight into a preallocated `.npy` memmap at its pool rows, so the
driver holds one batch at a time and the page cache holds the rest; selectors map the same file.

Layout: `<folder>/embedding.npy` (float32, (n, d)) and `<folder>/loss.npy` (float32, (n,)). The
folder is filled under a temporary name and renamed into place when every row has arrived exactly
once, so a reader never sees a half-written cache.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable

import numpy as np

from distill import artifacts
from distill.errors import DistillError

EMBEDDING_FILE = "embedding.npy"
RERUN = "rerun: the features are not cached until every pool row is embedded exactly once"
LOSS_FILE = "loss.npy"
FILES = (EMBEDDING_FILE, LOSS_FILE)


class FeatureWriter:
    """Preallocated memory-mapped (n, d) embedding and (n,) loss files, filled at the batches' row
    indices. The width d is taken from the first batch (the model's hidden size), n is known up front."""

    def __init__(self, folder: Path, n_rows: int):
        self.folder = Path(folder)
        self.n_rows = n_rows
        self.partial = self.folder.with_name(f"{self.folder.name}.partial-{os.getpid()}")
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True)
        self.seen = np.zeros(n_rows, dtype=bool)
        self.embedding: np.memmap | None = None
        self.loss = np.lib.format.open_memmap(self.partial / LOSS_FILE, mode="w+", dtype=np.float32, shape=(n_rows,))

    def write(self, rows: np.ndarray, embedding: np.ndarray, loss: np.ndarray) -> None:
        """Store one batch at its rows; a row outside the pool or written twice is a pipeline bug."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return
        if rows.min() < 0 or rows.max() >= self.n_rows:
            raise DistillError(f"embedding batch holds row {rows.max()} outside the pool of {self.n_rows} rows", RERUN)
        unique, counts = np.unique(rows, return_counts=True)
        repeated = np.union1d(rows[self.seen[rows]], unique[counts > 1])
        if len(repeated):
            raise DistillError(f"embedding batch repeats row(s) already written, e.g. {repeated[:5].tolist()}", RERUN)
        if self.embedding is None:
            self.embedding = np.lib.format.open_memmap(self.partial / EMBEDDING_FILE, mode="w+", dtype=np.float32,
                                                       shape=(self.n_rows, np.shape(embedding)[1]))
        self.embedding[rows] = embedding
        self.loss[rows] = loss
        self.seen[rows] = True

    def commit(self) -> Path:
        """Flush, check every row arrived, and rename the folder into place (atomic on one filesystem)."""
        missing = np.flatnonzero(~self.seen)
        if len(missing) or self.embedding is None:
            raise DistillError(f"{len(missing)} of {self.n_rows} pool rows were never embedded, e.g. {missing[:5].tolist()}", RERUN)
        self.embedding.flush()
        self.loss.flush()
        self.embedding = self.loss = None  # close the maps before the rename
        for name in FILES:
            artifacts.seal(self.partial / name)  # checksums travel with the folder: a damaged file is caught on reuse
        if intact(self.folder):  # another run finished the same content-hashed cache first: same bytes
            shutil.rmtree(self.partial)
        else:
            shutil.rmtree(self.folder, ignore_errors=True)  # a damaged earlier copy (already named in a warning)
            self.partial.replace(self.folder)
        return self.folder

    def discard(self) -> None:
        self.embedding = self.loss = None
        shutil.rmtree(self.partial, ignore_errors=True)


def stream(batches: Iterable[dict[str, np.ndarray]], folder: Path, n_rows: int) -> tuple[np.memmap, np.memmap]:
    """Write batches with keys row/embedding/loss into `folder`; returns the (embedding, loss) memmaps.
    On any failure the partial folder is removed and nothing is left at `folder`."""
    writer = FeatureWriter(folder, n_rows)
    try:
        for batch in batches:
            writer.write(batch["row"], batch["embedding"], batch["loss"])
        writer.commit()
    except BaseException:
        writer.discard()
        raise
    return load(folder)


def intact(folder: Path) -> bool:
    """A committed cache folder whose files match their checksums (a damaged one is named in a warning)."""
    return Path(folder).is_dir() and all(artifacts.intact(Path(folder) / name) for name in FILES)


def load(folder: Path) -> tuple[np.memmap, np.memmap]:
    """(embedding, loss) of a committed cache folder, memory-mapped read-only."""
    folder = Path(folder)
    return np.load(folder / EMBEDDING_FILE, mmap_mode="r"), np.load(folder / LOSS_FILE, mmap_mode="r")
