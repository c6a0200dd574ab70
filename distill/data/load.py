"""Data: load, map columns, validate, dedup, split.

Every source (sources.py), in any of the three formats (formats.py), ends as two pandas DataFrames with the
columns `id, title, prompt, response, turns`: the training pool (what selectors choose from) and the held-out
test set. The split is deterministic
and leak-free: an example whose id or normalised text hash is in the test set never enters the pool.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from distill.config.schema import DataConfig
from distill.data import formats
from distill.data.sources import _load_raw, _read_local
from distill.errors import DistillError

COLUMNS = ["id", "title", "prompt", "response", "turns"]  # turns: the prompt turns as JSON (formats.py)
TASK = "task"  # query-set column: the index of the query source an example came from
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame  # the pool selectors choose from
    test: pd.DataFrame  # held-out examples every trial is scored on
    source: str  # human-readable description of where the rows came from
    format: str = "summarization"  # the rows' layout (formats.py): data.format, or what `auto` found
    # target-task examples for query-based selectors (rds_plus): COLUMNS + "task" (0, 1, ...: which query
    # source), never a pool or held-out row; empty without data.query_size and select.query
    query: pd.DataFrame = dataclasses.field(default_factory=lambda: Splits.empty_query())

    @staticmethod
    def empty_query() -> pd.DataFrame:
        return pd.DataFrame(columns=[*COLUMNS, TASK])

    @functools.cached_property
    def fingerprint(self) -> str:
        """Content hash of both splits: part of every cache key downstream (hashed once per Splits). The
        query set is not in it (it changes no trial but rds_plus's, whose selection key holds `query_fingerprint`)."""
        return _fingerprint([self.train, self.test], salt=self.format)

    @functools.cached_property
    def query_fingerprint(self) -> str:
        return _fingerprint([self.query], [TASK])


def _fingerprint(frames: list[pd.DataFrame], extra: list[str] = (), salt: str = "") -> str:
    digest = hashlib.sha256(salt.encode())
    for frame in frames:
        digest.update("\x1f".join(frame["id"]).encode())
        digest.update(pd.util.hash_pandas_object(frame[[*COLUMNS, *extra]], index=False).values.tobytes())
    return digest.hexdigest()[:16]


def load_splits(cfg: DataConfig, query_files: list[str] = ()) -> Splits:
    """Load, normalise, validate and split according to `cfg`; the query set is the seeded slice of
    `cfg.query_size` training examples (task 0, when any) followed by each of `query_files` (one task each)."""
    train_raw, test_raw, source = _load_raw(cfg)
    fmt = formats.detect(train_raw, cfg, source)
    train = _normalise(train_raw, fmt, cfg, source)
    test = _normalise(test_raw, fmt, cfg, source) if test_raw is not None else None
    if test is None:
        train, test = _carve_test(train, cfg)
    else:
        test = test.sample(n=min(cfg.test_size, len(test)), random_state=cfg.split_seed).sort_index()
    train = _drop_leaks(train, test)
    train, query = _carve_query(train, cfg)  # before max_train: the query set never shrinks a capped pool
    sources = [frame for frame in (query, *(_query_file(path, fmt, cfg, test) for path in query_files)) if len(frame)]
    query = pd.concat(sources, ignore_index=True) if sources else Splits.empty_query()
    query[TASK] = pd.factorize(query[TASK])[0]  # sources numbered 0, 1, ... in order
    if cfg.max_train is not None and len(train) > cfg.max_train:
        train = train.sample(n=cfg.max_train, random_state=cfg.split_seed).sort_index()
    if len(train) < 2:
        raise DistillError(
            f"only {len(train)} training examples remain in {source} after validation and the held-out split",
            "use a larger dataset or a smaller data.test_size",
        )
    return Splits(train.reset_index(drop=True), test.reset_index(drop=True), source, fmt, query)


def _normalise(frame: pd.DataFrame, fmt: str, cfg: DataConfig, source: str) -> pd.DataFrame:
    """`frame`'s rows as examples of format `fmt` (formats.py), with ids and titles, duplicates dropped."""
    out = formats.to_examples(frame, fmt, cfg, source)
    has_title = cfg.title_column and cfg.title_column in frame.columns
    out["title"] = frame[cfg.title_column].fillna("").astype(str).str.strip() if has_title else ""
    if cfg.id_column:
        if cfg.id_column not in frame.columns:
            raise DistillError(
                f"{source} has no id column '{cfg.id_column}'",
                "set data.id_column to an existing column, or null to hash prompts",
            )
        out["id"] = frame[cfg.id_column].astype(str)
    else:
        out["id"] = [text_hash(t)[:16] for t in out["prompt"]]
    out = out[~out["id"].duplicated() & ~out["prompt"].map(text_hash).duplicated()]
    return out[COLUMNS]


def text_hash(text: str) -> str:
    """Hash of whitespace- and case-normalised text: catches duplicates that differ in layout."""
    return hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()


def _carve_test(frame: pd.DataFrame, cfg: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    if len(frame) <= cfg.test_size + 1:
        raise DistillError(
            f"cannot hold out {cfg.test_size} of {len(frame)} examples and still train",
            "lower data.test_size or use a larger dataset",
        )
    test = frame.sample(n=cfg.test_size, random_state=cfg.split_seed).sort_index()
    return frame.drop(test.index), test


def _carve_query(train: pd.DataFrame, cfg: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the pool, the seeded slice of `cfg.query_size` training examples kept out of it as the query set)."""
    if cfg.query_size and cfg.query_size > len(train) - 2:
        raise DistillError(
            f"data.query_size={cfg.query_size} leaves fewer than 2 of the {len(train)} training examples for the pool",
            "lower data.query_size, or pass target-task examples with select.query instead",
        )
    query = train.sample(n=cfg.query_size, random_state=cfg.split_seed).sort_index()
    return train.drop(query.index), query.assign(**{TASK: "data.query_size"})


def _query_file(path: str, fmt: str, cfg: DataConfig, test: pd.DataFrame) -> pd.DataFrame:
    """One query file's examples (one task), read and mapped like the data; held-out examples are dropped
    (selecting for them would let the test set choose the training data)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DistillError(
            f"query file {file} does not exist",
            "pass existing .jsonl/.csv/.parquet files to select.query (relative paths are from the current directory)",
        )
    raw, where = _read_local(file), f"query file {file}"
    if formats.detect(raw, cfg, where) != fmt:
        raise DistillError(
            f"{where} is {formats.detect(raw, cfg, where)} data, but the training data is {fmt}",
            f"pass query examples in the training data's layout ({formats.accepted(cfg)})",
        )
    frame = _normalise(raw, fmt, cfg, where)
    kept = _drop_leaks(frame, test)
    if kept.empty:
        raise DistillError(
            f"every example of query file {file} is a held-out test example",
            "pass target-task examples that are not in the held-out set",
        )
    if len(kept) < len(frame):
        log.warning("query file %s: %d held-out example(s) dropped", file, len(frame) - len(kept))
    return kept.assign(**{TASK: str(file)})


def _drop_leaks(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """Remove from the pool every example that is also in the test set (by id or text hash)."""
    test_hashes = set(test["prompt"].map(text_hash))
    return train[~train["id"].isin(set(test["id"])) & ~train["prompt"].map(text_hash).isin(test_hashes)]
