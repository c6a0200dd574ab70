"""Data: embedded sample, local files with column mapping, split column, leakage, errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from distill.config.schema import DataConfig
from distill.data.load import COLUMNS, Splits, load_splits, text_hash
from distill.errors import DistillError

SCITLDR = Path(__file__).resolve().parents[2] / "data" / "scitldr" / "scitldr_a_train_dev.jsonl"


def _rows(n: int, prefix: str = "doc") -> list[dict]:
    return [
        {
            "id": f"{prefix}{i}",
            "title": f"Title {i}",
            "text": f"This is {prefix} number {i}. It talks about topic {i * 7} at some length; enough to pass.",
            "summary": f"Summary of {prefix} {i}.",
        }
        for i in range(n)
    ]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ----------------------------------------------------------------------------- embedded sample


def test_embedded_billsum_split():
    splits = load_splits(DataConfig(test_size=10))
    assert len(splits.train) + len(splits.test) == 90
    assert len(splits.test) == 10
    assert list(splits.train.columns) == COLUMNS and list(splits.test.columns) == COLUMNS
    assert not set(splits.train["id"]) & set(splits.test["id"])
    assert "BillSum" in splits.source


def test_embedded_split_is_deterministic_and_seeded():
    a, b = load_splits(DataConfig(test_size=10)), load_splits(DataConfig(test_size=10))
    assert a.test["id"].tolist() == b.test["id"].tolist()
    assert a.train["id"].tolist() == b.train["id"].tolist()
    assert a.fingerprint == b.fingerprint
    c = load_splits(DataConfig(test_size=10, split_seed=1))
    assert set(c.test["id"]) != set(a.test["id"])
    assert c.fingerprint != a.fingerprint


def test_max_train_caps_the_pool():
    splits = load_splits(DataConfig(test_size=5, max_train=20))
    assert len(splits.train) == 20
    assert len(splits.test) == 5
    assert not set(splits.train["id"]) & set(splits.test["id"])


# ----------------------------------------------------------------------------- leakage


def test_no_leakage_by_normalised_text_or_id(tmp_path):
    train = _rows(12, "tr")
    test = _rows(4, "te")
    # a train row whose text is a test text with different whitespace and case
    train.append(
        {
            "id": "dup-text",
            "title": "",
            "text": "  " + test[0]["text"].upper().replace(" ", "   \n") + " ",
            "summary": "A duplicate in disguise.",
        }
    )
    # a train row that shares a test row's id but has a different text
    train.append(
        {
            "id": test[1]["id"],
            "title": "",
            "text": "Completely different words that share only an identifier.",
            "summary": "Same id, other text.",
        }
    )
    rows = [dict(r, split="train") for r in train] + [dict(r, split="test") for r in test]
    path = _write_jsonl(tmp_path / "d.jsonl", rows)
    splits = load_splits(
        DataConfig(source=str(path), split_column="split", test_split="test", test_size=4, id_column="id")
    )
    assert len(splits.test) == 4
    test_hashes = set(splits.test["prompt"].map(text_hash))
    assert not set(splits.train["id"]) & set(splits.test["id"])
    assert not set(splits.train["prompt"].map(text_hash)) & test_hashes
    assert "dup-text" not in set(splits.train["id"])
    assert len(splits.train) == 12


def test_text_hash_ignores_layout_and_case():
    assert text_hash("Hello   World\n") == text_hash("hello world")
    assert text_hash("hello world") != text_hash("hello worlds")


def test_carved_split_drops_within_file_duplicates(tmp_path):
    rows = _rows(20)
    rows.append(dict(rows[3], id="copy", text=rows[3]["text"].lower()))
    path = _write_jsonl(tmp_path / "d.jsonl", rows)
    splits = load_splits(DataConfig(source=str(path), test_size=5, id_column="id"))
    assert len(splits.train) + len(splits.test) == 20
    all_hashes = pd.concat([splits.train, splits.test])["prompt"].map(text_hash)
    assert all_hashes.is_unique


# ----------------------------------------------------------------------------- local formats


def _renamed(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows).rename(
        columns={"id": "doc_id", "title": "heading", "text": "body", "summary": "abstract"}
    )


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_local_formats_with_column_mapping(tmp_path, suffix):
    frame = _renamed(_rows(15))
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".json":
        frame.to_json(path, orient="records")
    elif suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    cfg = DataConfig(
        source=str(path),
        text_column="body",
        summary_column="abstract",
        title_column="heading",
        id_column="doc_id",
        test_size=3,
    )
    splits = load_splits(cfg)
    reference = load_splits(
        DataConfig(source=str(_write_jsonl(tmp_path / "ref.jsonl", _rows(15))), id_column="id", test_size=3)
    )
    pd.testing.assert_frame_equal(splits.train, reference.train)
    pd.testing.assert_frame_equal(splits.test, reference.test)
    assert splits.fingerprint == reference.fingerprint
    assert splits.train["title"].str.startswith("Title").all()


# Files as other tools write them: each must load to exactly the rows of the plain JSONL file.
def _jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _csv_bytes(rows: list[dict], sep: str = ",") -> bytes:
    return pd.DataFrame(rows).to_csv(index=False, sep=sep, lineterminator="\r\n").encode()


AS_PEOPLE_HAVE_THEM = {
    "bom-crlf-blank-lines.jsonl": lambda rows: (
        b"\xef\xbb\xbf" + _jsonl_bytes(rows).replace(b"\n", b"\r\n") + b"\r\n\r\n"
    ),
    "array-named.jsonl": lambda rows: json.dumps(rows, indent=2).encode(),
    "lines-named.json": _jsonl_bytes,
    "bom-excel.csv": lambda rows: b"\xef\xbb\xbf" + _csv_bytes(rows) + b"\r\n",
    "tabs.tsv": lambda rows: _csv_bytes(rows, "\t"),
    "data.jsonl.gz": lambda rows: gzip.compress(b"\xef\xbb\xbf" + _jsonl_bytes(rows)),
    "data.json.gz": lambda rows: gzip.compress(json.dumps(rows).encode()),
    "data.csv.gz": lambda rows: gzip.compress(_csv_bytes(rows)),
}


@pytest.mark.parametrize("name", AS_PEOPLE_HAVE_THEM)
def test_files_as_other_tools_write_them_load_like_plain_jsonl(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(AS_PEOPLE_HAVE_THEM[name](_rows(15)))
    splits = load_splits(DataConfig(source=str(path), id_column="id", test_size=3))
    reference = load_splits(
        DataConfig(source=str(_write_jsonl(tmp_path / "ref.jsonl", _rows(15))), id_column="id", test_size=3)
    )
    assert splits.fingerprint == reference.fingerprint


@pytest.mark.parametrize(
    "name,content,problem,fix",
    [
        ("utf16.csv", "text,summary\nsome text here,short\n".encode("utf-16"), "is UTF-16 text", "iconv -f utf-16"),
        ("plain.jsonl.gz", b'{"text": "a"}\n', "cannot decompress", "gzip -t"),
        ("cut.jsonl.gz", gzip.compress(b'{"text": "a"}\n' * 100, mtime=0)[:40], "cannot decompress", "gzip -t"),
        ("sheet.xlsx", b"PK\x03\x04", "unsupported file type '.xlsx'", "CSV UTF-8"),
        ("data.zip", b"PK\x03\x04", "unsupported file type '.zip'", "unzip"),
        ("data.parquet.gz", b"x", "unsupported file type '.parquet.gz'", ".jsonl.gz"),
    ],
)
def test_files_that_cannot_be_read_say_how_to_convert_them(tmp_path, name, content, problem, fix):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DistillError) as err:
        load_splits(DataConfig(source=str(path)))
    assert problem in err.value.problem and name in err.value.problem
    assert fix in err.value.fix


def test_a_folder_of_shards_loads_like_one_file(tmp_path):
    rows = _rows(15)
    (tmp_path / "shards").mkdir()
    pd.DataFrame(rows[:8]).to_parquet(tmp_path / "shards" / "part-00000.parquet")
    pd.DataFrame(rows[8:]).to_parquet(tmp_path / "shards" / "part-00001.parquet")
    splits = load_splits(DataConfig(source=str(tmp_path / "shards"), id_column="id", test_size=3))
    assert set(splits.train["id"]) | set(splits.test["id"]) == {r["id"] for r in rows}
    assert "local folder" in splits.source


def test_a_hub_style_folder_maps_its_file_names_to_splits(tmp_path):
    """A Hub dataset's files copied to an offline machine: data/train-*.parquet and data/test-*.parquet are the splits."""
    (tmp_path / "hub" / "data").mkdir(parents=True)
    (tmp_path / "hub" / "README.md").write_text("# a dataset card\n")
    pd.DataFrame(_rows(12, "tr")).to_parquet(tmp_path / "hub" / "data" / "train-00000-of-00001.parquet")
    pd.DataFrame(_rows(5, "te")).to_parquet(tmp_path / "hub" / "data" / "test-00000-of-00001.parquet")
    splits = load_splits(DataConfig(source=str(tmp_path / "hub"), test_split="test", id_column="id", test_size=3))
    assert splits.train["id"].str.startswith("tr").all() and splits.test["id"].str.startswith("te").all()
    with pytest.raises(DistillError, match="has no split 'validation' .*train, test"):
        load_splits(DataConfig(source=str(tmp_path / "hub"), test_split="validation"))


def test_a_folder_written_by_save_to_disk_loads(tmp_path):
    import datasets

    datasets.Dataset.from_list(_rows(12)).save_to_disk(str(tmp_path / "saved"))
    assert len(load_splits(DataConfig(source=str(tmp_path / "saved"), id_column="id", test_size=3)).train) == 9


@pytest.mark.parametrize("shards", [{}, {"part-0.jsonl": b'{"text": "cut'}])
def test_a_folder_without_readable_shards_is_one_error(tmp_path, shards):
    (tmp_path / "folder.jsonl").mkdir()  # a folder named like a file, too
    for name, content in shards.items():
        (tmp_path / "folder.jsonl" / name).write_bytes(content)
    with pytest.raises(DistillError) as err:
        load_splits(DataConfig(source=str(tmp_path / "folder.jsonl")))
    assert "cannot read the folder" in err.value.problem and "shards" in err.value.fix


def test_ids_are_text_hashes_without_id_column(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", _rows(8))
    splits = load_splits(DataConfig(source=str(path), test_size=2))
    for _, row in splits.train.iterrows():
        assert row["id"] == text_hash(row["prompt"])[:16]


def test_missing_title_column_gives_empty_titles(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "title"} for r in _rows(8)]
    splits = load_splits(DataConfig(source=str(_write_jsonl(tmp_path / "d.jsonl", rows)), test_size=2))
    assert (splits.train["title"] == "").all()


def test_rows_with_an_empty_response_are_named_not_dropped(tmp_path):
    rows = _rows(10)
    rows[3]["summary"] = "   "
    rows[6]["summary"] = ""
    with pytest.raises(DistillError) as err:
        load_splits(DataConfig(source=str(_write_jsonl(tmp_path / "d.jsonl", rows)), id_column="id", test_size=2))
    assert "row 4, 7" in err.value.problem and "empty response ('summary')" in err.value.problem
    assert "remove the row" in err.value.fix


def test_short_responses_are_kept(tmp_path):
    rows = _rows(10)
    rows[2]["summary"] = "abc"
    rows[3]["text"] = "too short"
    splits = load_splits(DataConfig(source=str(_write_jsonl(tmp_path / "d.jsonl", rows)), id_column="id", test_size=2))
    assert len(splits.train) + len(splits.test) == 10


def test_fingerprint_changes_when_a_row_changes(tmp_path):
    rows = _rows(10)
    cfg = DataConfig(source=str(_write_jsonl(tmp_path / "a.jsonl", rows)), id_column="id", test_size=2)
    before = load_splits(cfg)
    rows[5]["summary"] = "A different summary entirely."
    rows[6]["title"] = "Another title"
    after = load_splits(DataConfig(source=str(_write_jsonl(tmp_path / "b.jsonl", rows)), id_column="id", test_size=2))
    assert after.test["id"].tolist() == before.test["id"].tolist()
    assert after.fingerprint != before.fingerprint
    # changing only a title still changes it
    frame = before.train.copy()
    frame.loc[0, "title"] = "changed"
    assert Splits(frame, before.test, "x").fingerprint != before.fingerprint


# ----------------------------------------------------------------------------- split column


def _scitldr_layout(path: Path, test_size: int) -> DataConfig:
    """SciTLDR's column layout: one file, a `split` column (train/dev), ids in `id`, no title."""
    return DataConfig(
        source=str(path),
        split_column="split",
        train_split="train",
        test_split="dev",
        id_column="id",
        title_column=None,
        test_size=test_size,
    )


def test_split_column_scitldr_shaped(tmp_path):
    rows = [dict(r, split="train", all_summaries=[r["summary"]]) for r in _rows(20, "t")]
    rows += [dict(r, split="dev", all_summaries=[r["summary"], "x"]) for r in _rows(6, "d")]
    path = _write_jsonl(tmp_path / "scitldr_like.jsonl", rows)
    cfg = _scitldr_layout(path, test_size=4)
    splits = load_splits(cfg)
    assert len(splits.test) == 4
    assert splits.test["id"].str.startswith("d").all()
    assert splits.train["id"].str.startswith("t").all()
    assert len(splits.train) == 20
    assert "split=train/dev" in splits.source
    assert load_splits(cfg).test["id"].tolist() == splits.test["id"].tolist()  # the same held-out set every time


def test_split_column_without_test_split_carves_from_train(tmp_path):
    rows = [dict(r, split="train") for r in _rows(12, "t")] + [dict(r, split="dev") for r in _rows(5, "d")]
    path = _write_jsonl(tmp_path / "s.jsonl", rows)
    splits = load_splits(DataConfig(source=str(path), split_column="split", id_column="id", test_size=3))
    assert len(splits.train) == 9 and len(splits.test) == 3
    assert pd.concat([splits.train, splits.test])["id"].str.startswith("t").all()


@pytest.mark.skipif(not SCITLDR.exists(), reason="SciTLDR file not in this checkout")
def test_real_scitldr_file():
    splits = load_splits(_scitldr_layout(SCITLDR, test_size=50))
    assert len(splits.train) == 1991
    assert len(splits.test) == 50
    assert splits.test["id"].str.contains("dev").all()
    assert not splits.train["id"].str.contains("dev").any()
    assert not set(splits.train["prompt"].map(text_hash)) & set(splits.test["prompt"].map(text_hash))


# ----------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    with pytest.raises(DistillError) as err:
        load_splits(DataConfig(source=str(tmp_path / "nope.jsonl")))
    assert "does not exist" in err.value.problem
    assert "--data" in err.value.fix


def test_missing_column_names_it_and_the_mapping(tmp_path):
    rows = [{"id": r["id"], "text": r["text"], "abstract": r["summary"]} for r in _rows(6)]
    with pytest.raises(DistillError) as err:
        load_splits(DataConfig(source=str(_write_jsonl(tmp_path / "d.jsonl", rows)), test_size=2))
    assert "'summary'" in err.value.problem and "abstract" in err.value.problem
    assert "data.summary_column" in err.value.fix


def test_missing_id_column(tmp_path):
    with pytest.raises(DistillError, match="id column"):
        load_splits(DataConfig(source=str(_write_jsonl(tmp_path / "d.jsonl", _rows(6))), id_column="uid", test_size=2))


def test_bad_split_value(tmp_path):
    rows = [dict(r, split="train") for r in _rows(8)]
    path = _write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DistillError) as err:
        load_splits(DataConfig(source=str(path), split_column="split", test_split="validation", test_size=2))
    assert "validation" in err.value.problem and "train" in err.value.problem
    assert "data.test_split" in err.value.fix


def test_missing_split_column(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", _rows(8))
    with pytest.raises(DistillError, match="split column 'part'"):
        load_splits(DataConfig(source=str(path), split_column="part", test_size=2))


@pytest.mark.parametrize(
    "name,content",
    [
        ("broken.jsonl", '{"text": "fine", "summary": "ok"}\n{this is not json\n'),
        ("broken.json", "[1, 2"),
        ("broken.csv", 'text,summary\n"unterminated,1\n'),
        ("broken.parquet", "not a parquet file"),
    ],
)
def test_unparseable_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DistillError) as err:
        load_splits(DataConfig(source=str(path)))
    assert "cannot parse" in err.value.problem and name in err.value.problem
    assert "file format" in err.value.fix


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("text\tsummary\n")
    with pytest.raises(DistillError) as err:
        load_splits(DataConfig(source=str(path)))
    assert "unsupported" in err.value.problem
    assert ".jsonl" in err.value.fix and ".parquet" in err.value.fix


def test_too_few_rows_to_hold_out(tmp_path):
    with pytest.raises(DistillError, match="test_size"):
        load_splits(DataConfig(source=str(_write_jsonl(tmp_path / "d.jsonl", _rows(4))), test_size=4))


def test_no_usable_rows(tmp_path):
    rows = [dict(r, summary="") for r in _rows(5)]
    with pytest.raises(DistillError, match="row 1, 2, 3 and 2 more"):
        load_splits(DataConfig(source=str(_write_jsonl(tmp_path / "d.jsonl", rows)), test_size=2))


def test_hub_dataset_offline_fails_with_the_local_alternative(monkeypatch):
    import datasets

    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("Couldn't reach 'some/hub-dataset' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DistillError) as err:
        load_splits(DataConfig(source="some/hub-dataset"))
    assert calls and calls[0][0] == "some/hub-dataset"
    assert "could not load Hub dataset some/hub-dataset" in err.value.problem
    assert "OfflineModeIsEnabled" in err.value.problem
    assert "--data" in err.value.fix and ".jsonl" in err.value.fix


def test_hub_dataset_loads_through_datasets(monkeypatch):
    import datasets

    class Fake:
        def __init__(self, frame):
            self.frame = frame

        def to_pandas(self):
            return self.frame

    frames = {"train": pd.DataFrame(_rows(10, "tr")), "test": pd.DataFrame(_rows(5, "te"))}
    seen = []

    def fake_load(name, config, split, token=None):
        seen.append((name, config, split))
        return Fake(frames[split])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    splits = load_splits(
        DataConfig(source="org/data", hub_config="cfg", test_split="test", test_size=3, id_column="id")
    )
    assert seen == [("org/data", "cfg", "train"), ("org/data", "cfg", "test")]
    assert len(splits.train) == 10 and len(splits.test) == 3
    assert splits.test["id"].str.startswith("te").all()
    assert "org/data" in splits.source


def test_null_cells_are_empty_not_the_string_nan(tmp_path):
    rows = _rows(8)
    rows[1]["title"] = None
    splits = load_splits(DataConfig(source=str(_write_jsonl(tmp_path / "d.jsonl", rows)), id_column="id", test_size=2))
    both = pd.concat([splits.train, splits.test])
    assert both.set_index("id").loc["doc1", "title"] == ""
    assert not both[["title", "prompt", "response"]].isin(["nan", "None"]).any().any()
    rows[2]["text"] = None  # a missing prompt is empty, and named
    with pytest.raises(DistillError, match="row 3 .* an empty prompt"):
        load_splits(DataConfig(source=str(_write_jsonl(tmp_path / "e.jsonl", rows)), id_column="id", test_size=2))


# ----------------------------------------------------------------------------- the query set (rds_plus)


def test_query_slice_is_kept_out_of_the_pool_and_the_test_set():
    plain = load_splits(DataConfig(test_size=10))
    assert plain.query.empty and list(plain.query.columns) == [*COLUMNS, "task"]
    splits = load_splits(DataConfig(test_size=10, query_size=6))
    assert len(splits.query) == 6 and splits.query["task"].tolist() == [0] * 6
    assert len(splits.train) == len(plain.train) - 6 and splits.test.equals(plain.test)
    assert set(splits.query["id"]) <= set(plain.train["id"])  # taken from the training split
    assert not set(splits.query["id"]) & (set(splits.train["id"]) | set(splits.test["id"]))
    assert splits.fingerprint != plain.fingerprint  # the pool changed: every trial's key with it
    again = load_splits(DataConfig(test_size=10, query_size=6))
    assert again.query["id"].tolist() == splits.query["id"].tolist()  # seeded (split_seed)
    capped = load_splits(DataConfig(test_size=10, query_size=6, max_train=20))
    assert (
        len(capped.train) == 20 and capped.query["id"].tolist() == splits.query["id"].tolist()
    )  # taken before the cap


def test_query_files_are_tasks_without_held_out_examples(tmp_path):
    data = _write_jsonl(tmp_path / "d.jsonl", _rows(12))
    first = _write_jsonl(tmp_path / "q1.jsonl", _rows(3, "qa"))
    held_out = load_splits(DataConfig(source=str(data), test_size=2, id_column="id")).test
    held_out = held_out.rename(columns={"prompt": "text", "response": "summary"}).drop(columns="turns")
    second = _write_jsonl(tmp_path / "q2.jsonl", _rows(2, "qb") + held_out.assign(title="").to_dict("records"))
    cfg = DataConfig(source=str(data), test_size=2, id_column="id", query_size=1)
    splits = load_splits(cfg, [str(first), str(second)])
    assert splits.query["task"].tolist() == [0, 1, 1, 1, 2, 2]  # the slice, then one task per file
    assert set(splits.query["id"]) & set(splits.test["id"]) == set()  # the held-out rows in q2 were dropped
    assert splits.fingerprint == load_splits(cfg).fingerprint  # files change no pool or trial...
    assert splits.query_fingerprint != load_splits(cfg).query_fingerprint  # ...only rds_plus's query set
    with pytest.raises(DistillError, match="does not exist"):
        load_splits(cfg, [str(tmp_path / "nope.jsonl")])
    only_held_out = _write_jsonl(tmp_path / "q3.jsonl", held_out.assign(title="").to_dict("records"))
    with pytest.raises(DistillError, match="every example of query file"):
        load_splits(cfg, [str(only_held_out)])


def test_query_slice_must_leave_a_pool(tmp_path):
    with pytest.raises(DistillError, match="query_size=9"):
        load_splits(DataConfig(source=str(_write_jsonl(tmp_path / "d.jsonl", _rows(12))), test_size=2, query_size=9))
