"""Data: load (embedded sample / Hub / local file), map columns, validate, dedup, split.

Every source ends as two pandas DataFrames with the columns `id, title, text, summary`: the
training pool (what selectors choose from) and the held-out test set. The split is deterministic
and leak-free: an example whose id or normalised text hash is in the test set never enters the pool.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import hashlib
import importlib.resources
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pandas as pd

from distill.config.env import secret
from distill.config.schema import EMBEDDED_BILLSUM, DataConfig
from distill.errors import DistillError, describe

COLUMNS = ["id", "title", "text", "summary"]
TASK = "task"  # query-set column: the index of the query source an example came from
log = logging.getLogger(__name__)
LOCAL_SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
GZIP = ".gz"  # a text format may be gzip-compressed (data.jsonl.gz, data.csv.gz): pandas reads it as it is
TEXT_ENCODING = "utf-8-sig"  # UTF-8 that may start with the byte-order mark many editors and spreadsheets write
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
DATASETS_LOGGERS = ("datasets", "huggingface_hub")  # their warnings would be extra lines on a failed run's stderr
SNIFF_BYTES = 4096  # enough of a JSON file's start to see whether it is one array or one object per line
# formats people have that distill does not read, and the conversion that makes them readable
CONVERSIONS = {
    ".xlsx": "save it from the spreadsheet program as CSV UTF-8 (.csv)",
    ".xls": "save it from the spreadsheet program as CSV UTF-8 (.csv)",
    ".zip": "unpack it (unzip FILE) and pass the file inside, or compress that file with gzip (.jsonl.gz, .csv.gz)",
    ".bz2": "recompress it with gzip (bunzip2 FILE, then gzip the result) or pass it uncompressed",
    ".xz": "recompress it with gzip (unxz FILE, then gzip the result) or pass it uncompressed",
    ".zst": "recompress it with gzip (unzstd FILE, then gzip the result) or pass it uncompressed",
    ".arrow": "load it with datasets and save it as Parquet: Dataset.from_file(FILE).to_parquet('data.parquet')",
}


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame  # the pool selectors choose from
    test: pd.DataFrame  # held-out examples every trial is scored on
    source: str  # human-readable description of where the rows came from
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
        return _fingerprint([self.train, self.test])

    @functools.cached_property
    def query_fingerprint(self) -> str:
        return _fingerprint([self.query], [TASK])


def _fingerprint(frames: list[pd.DataFrame], extra: list[str] = ()) -> str:
    digest = hashlib.sha256()
    for frame in frames:
        digest.update("\x1f".join(frame["id"]).encode())
        digest.update(pd.util.hash_pandas_object(frame[[*COLUMNS, *extra]], index=False).values.tobytes())
    return digest.hexdigest()[:16]


def embedded_billsum_path() -> Path:
    return Path(str(importlib.resources.files("distill") / "data" / "billsum_sample.jsonl"))


def load_splits(cfg: DataConfig, query_files: list[str] = ()) -> Splits:
    """Load, normalise, validate and split according to `cfg`; the query set is the seeded slice of
    `cfg.query_size` training examples (task 0, when any) followed by each of `query_files` (one task each)."""
    train_raw, test_raw, source = _load_raw(cfg)
    train = _normalise(train_raw, cfg, source)
    test = _normalise(test_raw, cfg, source) if test_raw is not None else None
    if test is None:
        train, test = _carve_test(train, cfg)
    else:
        test = test.sample(n=min(cfg.test_size, len(test)), random_state=cfg.split_seed).sort_index()
    train = _drop_leaks(train, test)
    train, query = _carve_query(train, cfg)  # before max_train: the query set never shrinks a capped pool
    sources = [frame for frame in (query, *(_query_file(path, cfg, test) for path in query_files)) if len(frame)]
    query = pd.concat(sources, ignore_index=True) if sources else Splits.empty_query()
    query[TASK] = pd.factorize(query[TASK])[0]  # sources numbered 0, 1, ... in order
    if cfg.max_train is not None and len(train) > cfg.max_train:
        train = train.sample(n=cfg.max_train, random_state=cfg.split_seed).sort_index()
    if len(train) < 2:
        raise DistillError(
            f"only {len(train)} training examples remain in {source} after validation and the held-out split",
            "use a larger dataset or a smaller data.test_size",
        )
    return Splits(train.reset_index(drop=True), test.reset_index(drop=True), source, query)


def is_hub_dataset(source: str) -> bool:
    """Neither the embedded sample nor a local file or folder (by suffix or by existence): a Hub dataset name."""
    path = Path(source).expanduser()
    return source != EMBEDDED_BILLSUM and _format(path) is None and not path.exists()


def has_splits(source: str) -> bool:
    """A source whose splits data.test_split can name without a split column: a Hub dataset or a local folder."""
    return is_hub_dataset(source) or Path(source).expanduser().is_dir()


def _format(path: Path) -> str | None:
    """The data format a file name says (LOCAL_SUFFIXES' values), looking through a .gz; None: no known format."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes[-1:] == [GZIP]:
        kind = LOCAL_SUFFIXES.get(suffixes[0]) if len(suffixes) == 2 else None
        return kind if kind != "parquet" else None  # Parquet compresses inside the file
    return LOCAL_SUFFIXES.get(suffixes[-1]) if suffixes else None


def _load_raw(cfg: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame | None, str]:
    if cfg.source == EMBEDDED_BILLSUM:
        return _read_local(embedded_billsum_path()), None, "embedded BillSum sample (90 real US bills, CC0)"
    if is_hub_dataset(cfg.source):
        return _load_hub(cfg)
    path = Path(cfg.source).expanduser()
    if not path.exists():
        raise DistillError(
            f"data file {path} does not exist",
            "check the path passed to --data (relative paths are from the current directory)",
        )
    if path.is_dir():
        found = _read_folder(path)
        if not cfg.split_column:
            return _named_splits(found, cfg, path)
        frame = pd.concat(list(found.values()), ignore_index=True)
    else:
        frame = _read_local(path)
    if cfg.split_column:
        return _split_by_column(frame, cfg, path)
    return frame, None, f"local file {path}"


def _read_local(path: Path) -> pd.DataFrame:
    """One local file as people have it: UTF-8 with or without a byte-order mark, any line endings, blank lines
    at the end, a JSON array or one object per line whatever the suffix says, optionally gzip-compressed."""
    kind = _format(path)
    if kind is None:
        suffix = "".join(path.suffixes[-2:]) or path.name
        raise DistillError(
            f"cannot read {path}: unsupported file type '{suffix}'",
            CONVERSIONS.get(
                path.suffix.lower(),
                f"convert it to one of {', '.join(LOCAL_SUFFIXES)} "
                "(the text formats may be gzip-compressed: .jsonl.gz, .csv.gz)",
            ),
        )
    if path.stat().st_size == 0:
        raise DistillError(f"data file {path} is empty", "point --data at a file with one example per row")
    try:
        if kind == "json":
            return _read_json(path)
        if kind in ("csv", "tsv"):
            return pd.read_csv(
                path, sep="," if kind == "csv" else "\t", dtype=str, keep_default_na=False, encoding=TEXT_ENCODING
            )
        return pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        if exc.start == 0 and exc.object.startswith(UTF16_BOMS):
            raise DistillError(
                f"data file {path} is UTF-16 text, not UTF-8",
                "re-save it as UTF-8, e.g. iconv -f utf-16 -t utf-8 in > out",
            ) from None
        raise DistillError(
            f"data file {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})",
            "re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 in > out",
        ) from None
    except (OSError, EOFError) as exc:  # gzip's: not a gzip file, or one cut short
        raise DistillError(
            f"cannot decompress {path} ({describe(exc)})",
            "check the file is complete and gzip-compressed (gzip -t FILE), or drop the .gz suffix "
            "if it is not compressed",
        ) from None
    except ValueError as exc:
        raise DistillError(
            f"cannot parse {path} as {kind} ({str(exc).splitlines()[0][:120]})",
            "check the file format (.jsonl must hold one JSON object per line)",
        ) from None


def _read_json(path: Path) -> pd.DataFrame:
    """A JSON array (whatever the suffix), else JSON Lines for .jsonl; a .json file is one document, or
    JSON Lines when it holds several."""
    with _open(path) as file:
        array = file.read(SNIFF_BYTES).decode(TEXT_ENCODING, errors="ignore").lstrip().startswith("[")
    read = functools.partial(pd.read_json, path, dtype=False, encoding=TEXT_ENCODING)
    if array:
        return read(lines=False)
    if ".jsonl" in [suffix.lower() for suffix in path.suffixes]:
        return read(lines=True)
    try:
        return read(lines=False)
    except ValueError:  # several documents in a .json file: JSON Lines
        return read(lines=True)


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path) if path.suffix.lower() == GZIP else path.open("rb")


def _read_folder(path: Path) -> dict[str, pd.DataFrame]:
    """A folder of data shards, as a Hub dataset's files or Spark and pyarrow write them (Parquet, JSON Lines,
    CSV; gzip allowed), read by `datasets`, split name → rows: file names such as train-*.parquet and
    test-*.parquet are the splits, as they would be for the dataset on the Hub (one split, 'train', when the
    names say none). A folder that Dataset.save_to_disk wrote is read back with load_from_disk."""
    saved = (path / "state.json").exists() or (path / "dataset_dict.json").exists()
    with _quiet_datasets() as datasets:
        try:
            found = datasets.load_from_disk(str(path)) if saved else datasets.load_dataset(str(path))
        except Exception as exc:  # datasets raises many types, wrapping the cause: no files it reads, a bad shard
            while exc.__cause__ is not None:
                exc = exc.__cause__
            raise DistillError(
                f"cannot read the folder {path} as a dataset ({describe(exc)[:200]})",
                "put data shards of one format in it (.parquet, .jsonl, .csv, optionally .gz), or pass "
                "one file with --data (which also shows which shard is broken)",
            ) from None
    if isinstance(found, datasets.Dataset):  # save_to_disk of a single split
        return {"train": found.to_pandas()}
    return {split: rows.to_pandas() for split, rows in found.items()}


def _named_splits(
    found: dict[str, pd.DataFrame], cfg: DataConfig, path: Path
) -> tuple[pd.DataFrame, pd.DataFrame | None, str]:
    """The folder's splits that data.train_split and data.test_split name."""
    wanted = [cfg.train_split] + ([cfg.test_split] if cfg.test_split else [])
    missing = [split for split in wanted if split not in found]
    if missing:
        raise DistillError(
            f"folder {path} has no split '{missing[0]}' (its splits, from the file names: {', '.join(found)})",
            "set data.train_split / data.test_split to one of them",
        )
    return found[cfg.train_split], found.get(cfg.test_split), f"local folder {path} ({'/'.join(wanted)})"


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[Any]:
    """The datasets library without its progress bars and log lines (they are not distill's one line: a failure
    becomes a DistillError), both put back as they were after."""
    import datasets

    loggers = {logging.getLogger(name): logging.getLogger(name).level for name in DATASETS_LOGGERS}
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield datasets
    finally:
        for logger, level in loggers.items():
            logger.setLevel(level)
        if bars:
            datasets.enable_progress_bars()


def _split_by_column(frame: pd.DataFrame, cfg: DataConfig, path: Path) -> tuple[pd.DataFrame, pd.DataFrame | None, str]:
    column = cfg.split_column
    if column not in frame.columns:
        raise DistillError(
            f"split column '{column}' not in {path} (columns: {', '.join(map(str, frame.columns))})",
            "set data.split_column to an existing column, or null",
        )
    values = set(frame[column].astype(str))
    for split in (cfg.train_split, cfg.test_split):
        if split is not None and split not in values:
            raise DistillError(
                f"split '{split}' not found in column '{column}' of {path} (values: {', '.join(sorted(values))})",
                "set data.train_split / data.test_split to existing values",
            )
    train = frame[frame[column].astype(str) == cfg.train_split]
    test = frame[frame[column].astype(str) == cfg.test_split] if cfg.test_split else None
    return train, test, f"local file {path} ({column}={cfg.train_split}/{cfg.test_split or 'carved'})"


def _load_hub(cfg: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame | None, str]:
    """Load from the Hugging Face Hub; a failure says what failed and how to work offline."""
    token = secret("HF_TOKEN")
    name = f"{cfg.source}" + (f" (config {cfg.hub_config})" if cfg.hub_config else "")
    splits = [cfg.train_split] + ([cfg.test_split] if cfg.test_split else [])
    try:
        with _quiet_datasets() as datasets:
            loaded = [
                datasets.load_dataset(cfg.source, cfg.hub_config, split=s, token=token).to_pandas() for s in splits
            ]
    except Exception as exc:  # the datasets library raises many types for one cause: not reachable
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise DistillError(
            f"could not load Hub dataset {name}: {reason}",
            "check the name, network and HF_TOKEN; offline, pass a local .jsonl/.csv/.parquet with --data, "
            "or use the embedded sample (--data embedded:billsum)",
        ) from None
    return loaded[0], (loaded[1] if len(loaded) > 1 else None), f"Hub dataset {name}"


def _normalise(frame: pd.DataFrame, cfg: DataConfig, source: str) -> pd.DataFrame:
    """Map user columns onto id/title/text/summary and drop rows that cannot be trained on."""
    for role, column in (("text", cfg.text_column), ("summary", cfg.summary_column)):
        if column not in frame.columns:
            raise DistillError(
                f"{source} has no '{column}' column for the {role} (columns: {', '.join(map(str, frame.columns))})",
                f"map it with --set data.{role}_column=<column>",
            )
    out = pd.DataFrame(
        {
            "text": frame[cfg.text_column].fillna("").astype(str).str.strip(),
            "summary": frame[cfg.summary_column].fillna("").astype(str).str.strip(),
        }
    )
    has_title = cfg.title_column and cfg.title_column in frame.columns
    out["title"] = frame[cfg.title_column].fillna("").astype(str).str.strip() if has_title else ""
    if cfg.id_column:
        if cfg.id_column not in frame.columns:
            raise DistillError(
                f"{source} has no id column '{cfg.id_column}'",
                "set data.id_column to an existing column, or null to hash texts",
            )
        out["id"] = frame[cfg.id_column].astype(str)
    else:
        out["id"] = [text_hash(t)[:16] for t in out["text"]]
    keep = (out["text"].str.len() >= cfg.min_text_chars) & (out["summary"].str.len() >= cfg.min_summary_chars)
    out = out[keep]
    out = out[~out["id"].duplicated() & ~out["text"].map(text_hash).duplicated()]
    if out.empty:
        raise DistillError(
            f"no usable rows in {source}: every row has a text shorter than {cfg.min_text_chars} "
            f"or a summary shorter than {cfg.min_summary_chars} characters",
            "check the column mapping",
        )
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


def _query_file(path: str, cfg: DataConfig, test: pd.DataFrame) -> pd.DataFrame:
    """One query file's examples (one task), read and mapped like the data; held-out examples are dropped
    (selecting for them would let the test set choose the training data)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DistillError(
            f"query file {file} does not exist",
            "pass existing .jsonl/.csv/.parquet files to select.query (relative paths are from the current directory)",
        )
    frame = _normalise(_read_local(file), cfg, f"query file {file}")
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
    test_hashes = set(test["text"].map(text_hash))
    return train[~train["id"].isin(set(test["id"])) & ~train["text"].map(text_hash).isin(test_hashes)]
