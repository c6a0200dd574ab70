"""The three data formats (distill/data/formats.py): detection, mapping to prompt turns + response, and the one
line for each way a row can be wrong — from every source distill reads."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from distill.config.schema import DataConfig
from distill.data.load import load_splits
from distill.errors import DistillError


def instruction_rows(n: int = 12) -> list[dict]:
    return [
        {
            "instruction": f"Give a title for essay number {i}.",
            "input": f"Essay {i} argues that rivers shape towns." if i % 2 else "",
            "output": f"Rivers and towns, part {i}.",
        }
        for i in range(n)
    ]


def chat_rows(n: int = 12) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": f"What is {i} plus {i}?"},
                {"role": "assistant", "content": f"{2 * i}."},
                {"role": "user", "content": f"And {i} times {i}?"},
                {"role": "assistant", "content": f"{i * i}."},
            ]
        }
        for i in range(n)
    ]


def write(path: Path, rows: list[dict]) -> Path:
    frame = pd.DataFrame(rows)
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    elif path.suffix == ".csv":
        frame.assign(**{c: frame[c].map(json.dumps) for c in frame if c == "messages"}).to_csv(path, index=False)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def splits_of(path: Path, **settings):
    return load_splits(DataConfig(source=str(path), test_size=2, **settings))


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_instruction_rows_become_one_user_turn_with_the_input_after_the_instruction(tmp_path, suffix):
    splits = splits_of(write(tmp_path / f"d{suffix}", instruction_rows()))
    assert splits.format == "instruction"
    both = pd.concat([splits.train, splits.test]).set_index("response")
    turns = json.loads(both.loc["Rivers and towns, part 1.", "turns"])
    assert turns == [
        {"role": "user", "content": "Give a title for essay number 1.\n\nEssay 1 argues that rivers shape towns."}
    ]
    assert both.loc["Rivers and towns, part 2.", "prompt"] == "Give a title for essay number 2."  # no input


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_chat_rows_answer_the_last_assistant_turn(tmp_path, suffix):
    splits = splits_of(write(tmp_path / f"d{suffix}", chat_rows()))
    assert splits.format == "chat"
    row = pd.concat([splits.train, splits.test]).set_index("response").loc["9."]
    turns = json.loads(row["turns"])
    assert [t["role"] for t in turns] == ["system", "user", "assistant", "user"]  # the system turn is kept
    assert turns[-1]["content"] == "And 3 times 3?" and row["prompt"].endswith("And 3 times 3?")


def test_formats_work_from_a_folder_of_shards_and_from_the_hub(tmp_path, monkeypatch):
    folder = tmp_path / "shards"
    folder.mkdir()
    write(folder / "train-0.jsonl", chat_rows(6))
    write(folder / "train-1.jsonl", chat_rows(12)[6:])
    assert splits_of(folder).format == "chat"

    import datasets

    class Rows:
        def to_pandas(self):
            return pd.DataFrame(instruction_rows())

    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: Rows())
    assert load_splits(DataConfig(source="org/alpaca-like", test_size=2)).format == "instruction"


def test_mapped_column_names(tmp_path):
    rows = [{"q": r["instruction"], "a": r["output"]} for r in instruction_rows()]
    splits = splits_of(write(tmp_path / "d.jsonl", rows), instruction_column="q", output_column="a")
    assert splits.format == "instruction" and len(splits.train) == 10


def test_the_format_changes_the_fingerprint(tmp_path):
    """The same prompt and response as a chat or as an instruction are different examples to the model."""
    rows = instruction_rows()
    chat = [
        {"messages": [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["output"]}]}
        for r in rows
    ]
    plain = [{"instruction": r["instruction"], "output": r["output"]} for r in rows]
    a, b = splits_of(write(tmp_path / "c.jsonl", chat)), splits_of(write(tmp_path / "i.jsonl", plain))
    assert a.train["turns"].tolist() == b.train["turns"].tolist() and a.fingerprint != b.fingerprint


BAD_ROWS = [
    ({"messages": "hello"}, "'messages' is 'hello', not a list of messages", "a list such as"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "has no assistant turn", "end each conversation"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "has the role 'robot'", "system, user, assistant"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "no user turn before", "start the conversation"),
    ({"messages": ["hi"]}, "not a {role, content} object", '{"role": "user"'),
    (
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]},
        "empty response ('the last assistant turn')",
        "remove the row",
    ),
]


@pytest.mark.parametrize(("bad", "problem", "fix"), BAD_ROWS)
def test_a_bad_chat_row_is_named(tmp_path, bad, problem, fix):
    rows = chat_rows()
    rows.insert(4, bad)
    with pytest.raises(DistillError) as err:
        splits_of(write(tmp_path / "d.jsonl", rows))
    assert "row 5" in err.value.problem and problem in err.value.problem and fix in err.value.fix


def test_a_file_that_mixes_formats_is_refused(tmp_path):
    with pytest.raises(DistillError) as err:
        splits_of(write(tmp_path / "d.jsonl", chat_rows(6) + instruction_rows(6)))
    assert "mixes formats (row 1 is chat, row 7 is instruction)" in err.value.problem
    assert "one file per format" in err.value.fix


def test_a_format_that_does_not_match_the_columns(tmp_path):
    with pytest.raises(DistillError) as err:
        splits_of(write(tmp_path / "d.jsonl", instruction_rows()), format="chat")
    assert "no 'messages' column for the chat format" in err.value.problem
    assert "data.messages_column" in err.value.fix and "data.format=auto" in err.value.fix


def test_columns_of_no_layout_name_what_was_found_and_the_three_accepted(tmp_path):
    with pytest.raises(DistillError) as err:
        splits_of(write(tmp_path / "d.jsonl", [{"question": f"q{i}", "answer": "a"} for i in range(8)]))
    assert "its columns are question, answer" in err.value.problem
    for layout in ("chat: messages", "instruction: instruction + output", "summarization: text + summary"):
        assert layout in err.value.fix


def test_query_files_must_have_the_datas_format(tmp_path):
    data = write(tmp_path / "d.jsonl", instruction_rows())
    query = write(tmp_path / "q.jsonl", chat_rows(3))
    with pytest.raises(DistillError, match="is chat data, but the training data is instruction"):
        load_splits(DataConfig(source=str(data), test_size=2), [str(query)])
