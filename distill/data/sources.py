"""Where the rows come from: the embedded BillSum sample, a local file or folder as people have it, or the Hub.

Each source is read as it is (any UTF-8, a JSON array or JSON Lines, gzip, a folder of shards with split names)
into raw DataFrames; a format distill cannot read is one line naming the conversion that makes it readable.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import importlib.resources
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd

from distill.config.env import secret
from distill.config.schema import EMBEDDED_BILLSUM, DataConfig
from distill.errors import DistillError, describe

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


def embedded_billsum_path() -> Path:
    return Path(str(importlib.resources.files("distill") / "data" / "billsum_sample.jsonl"))


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
