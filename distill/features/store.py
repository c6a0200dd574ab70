"""The features cache on disk: per-example feature columns streamed batch by batch into memory-mapped
files, and read back memory-mapped.

Why: at a million rows the driver must never hold the pool's embeddings twice (the old path kept
every Ray Data batch in a list, then concatenated and re-ordered them: three copies at its peak).
Here each batch is written straight into a preallocated `.npy` memmap at its pool rows, so the
driver holds one batch at a time and the page cache holds the rest; selectors map the same file.

Layout: one float32 `<folder>/<column>.npy` per column the batches carry besides `row`, e.g.
`embedding.npy` (n, d), `loss.npy` (n,). The folder is filled under a temporary name and renamed
into place when every row has arrived exactly once, so a reader never sees a half-written cache.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from distill.errors import DistillError
from distill.store import artifacts

RERUN = "rerun: the features are not cached until every pool row is embedded exactly once"
ROW = "row"  # the batch key holding each row's index; every other key is a column


def file_name(column: str) -> str:
    return f"{column}.npy"


class FeatureWriter:
    """Preallocated memory-mapped float32 files, one per column, filled at the batches' row indices.
    A column's width is taken from the first batch (e.g. the model's hidden size); n is known up front."""

    def __init__(self, folder: Path, n_rows: int):
        self.folder = Path(folder)
        self.n_rows = n_rows
        self.partial = self.folder.with_name(f"{self.folder.name}.partial-{os.getpid()}")
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True)
        self.seen = np.zeros(n_rows, dtype=bool)
        self.columns: dict[str, np.memmap] = {}

    def write(self, rows: np.ndarray, columns: dict[str, np.ndarray]) -> None:
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
        if self.columns and set(columns) != set(self.columns):
            raise DistillError(
                f"embedding batch holds columns {sorted(columns)}, earlier ones {sorted(self.columns)}", RERUN
            )
        for name, values in columns.items():
            if name not in self.columns:
                self.columns[name] = np.lib.format.open_memmap(
                    self.partial / file_name(name),
                    mode="w+",
                    dtype=np.float32,
                    shape=(self.n_rows, *np.shape(values)[1:]),
                )
            self.columns[name][rows] = values
        self.seen[rows] = True

    def commit(self) -> Path:
        """Flush, check every row arrived, and rename the folder into place (atomic on one filesystem)."""
        missing = np.flatnonzero(~self.seen)
        if len(missing) or not self.columns:
            raise DistillError(
                f"{len(missing)} of {self.n_rows} pool rows were never embedded, e.g. {missing[:5].tolist()}", RERUN
            )
        names = list(self.columns)
        for values in self.columns.values():
            values.flush()
        self.columns = {}  # close the maps before the rename
        for name in names:  # checksums travel with the folder: damage is caught on reuse
            artifacts.seal(self.partial / file_name(name))
        # another run finished the same content-hashed cache first: same bytes (checked quietly: a damaged
        # earlier copy was named in a warning when the run decided to recompute it)
        if self.folder.is_dir() and all(artifacts.verify(self.folder / file_name(name)) is None for name in names):
            shutil.rmtree(self.partial)
        else:
            shutil.rmtree(self.folder, ignore_errors=True)  # a damaged earlier copy
            self.partial.replace(self.folder)
        return self.folder

    def discard(self) -> None:
        self.columns = {}
        shutil.rmtree(self.partial, ignore_errors=True)


def stream(batches: Iterable[dict[str, np.ndarray]], folder: Path, n_rows: int) -> dict[str, np.memmap]:
    """Write batches (key `row` plus one key per column) into `folder`; returns the columns' memmaps.
    On any failure the partial folder is removed and nothing is left at `folder`."""
    writer = FeatureWriter(folder, n_rows)
    try:
        for batch in batches:
            writer.write(batch[ROW], {name: values for name, values in batch.items() if name != ROW})
        names = list(writer.columns)
        writer.commit()
    except BaseException:
        writer.discard()
        raise
    return load(folder, names)


def intact(folder: Path, columns: Iterable[str]) -> bool:
    """A committed cache folder holding these columns, their files matching their checksums (a damaged
    one is named in a warning)."""
    return Path(folder).is_dir() and all(artifacts.intact(Path(folder) / file_name(name)) for name in columns)


def load(folder: Path, columns: Iterable[str]) -> dict[str, np.memmap]:
    """The columns of a committed cache folder, memory-mapped read-only."""
    return {name: np.load(Path(folder) / file_name(name), mmap_mode="r") for name in columns}
