"""The three layouts a row of fine-tuning data can have, and the one example model they all become.

An example is its prompt turns (system / user / assistant messages, ending with the user turn being answered)
and the target response:

    summarization  {"text": document, "summary": summary}            → [user: document], summary
    instruction    {"instruction": …, "input": … (optional), "output": …}
                                                                     → [user: instruction + "\\n\\n" + input], output
    chat           {"messages": [{"role", "content"}, …]}            → every turn before the last assistant turn,
                                                                       that turn's content

The column names are settings (data.*_column). The instruction a summarization prompt starts with is not data:
it is `prompt.instruction` (distill/model/prompt.py), so the same rows serve any instruction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np
import pandas as pd

from distill.config.schema import DataConfig
from distill.errors import DistillError

ROLES = ("system", "user", "assistant")
INPUT_SEPARATOR = "\n\n"  # between an instruction and its input, as Alpaca's prompt has them
SHOWN_ROWS = 3  # rows named in an error that lists several


def layouts(cfg: DataConfig) -> dict[str, tuple[str, ...]]:
    """Each format's required columns under `cfg`'s column names (the instruction's input is optional)."""
    return {
        "chat": (cfg.messages_column,),
        "instruction": (cfg.instruction_column, cfg.output_column),
        "summarization": (cfg.text_column, cfg.summary_column),
    }


def accepted(cfg: DataConfig) -> str:
    """The three layouts in words, for an error that found none of them."""
    return "; ".join(f"{fmt}: {' + '.join(cols)}" for fmt, cols in layouts(cfg).items())


def detect(frame: pd.DataFrame, cfg: DataConfig, source: str) -> str:
    """The format of `frame`: `cfg.format` checked against the columns, or (auto) the one layout every row has.

    A file whose rows have different layouts (a JSONL where some rows are chat and others instructions) is
    refused: one run trains one kind of example."""
    if cfg.format != "auto":
        _require_columns(frame, cfg, cfg.format, source, "--set data.format=auto to detect the format")
        return cfg.format
    rows = {fmt: _complete(frame, cols) for fmt, cols in layouts(cfg).items() if set(cols) <= set(frame.columns)}
    if not rows:
        partial = [fmt for fmt, cols in layouts(cfg).items() if set(cols) & set(frame.columns)]
        if len(partial) == 1:  # one layout half there: name the column it lacks
            _require_columns(frame, cfg, partial[0], source, f"--set data.format=<one of {', '.join(layouts(cfg))}>")
        raise DistillError(
            f"cannot tell the format of {source}: its columns are {', '.join(map(str, frame.columns))}",
            f"give it the columns of one of the three layouts ({accepted(cfg)}) or map yours with "
            "--set data.<name>_column=<column> and --set data.format=<format>",
        )
    full = [fmt for fmt, has in rows.items() if has.all()]
    if full:
        return full[0]  # chat, then instruction, then summarization: the most specific layout a row can carry
    _refuse_mixed(rows, source)
    return (
        next(fmt for fmt, has in rows.items() if has.any()) if any(h.any() for h in rows.values()) else next(iter(rows))
    )


def _require_columns(frame: pd.DataFrame, cfg: DataConfig, fmt: str, source: str, other: str) -> None:
    """One line naming the first column of `fmt`'s layout that `frame` lacks, and the setting that maps it."""
    missing = [c for c in layouts(cfg)[fmt] if c not in frame.columns]
    if missing:
        raise DistillError(
            f"{source} has no '{missing[0]}' column for the {fmt} format "
            f"(columns: {', '.join(map(str, frame.columns))})",
            f"map it with --set data.{_setting(cfg, fmt, missing[0])}=<column>, or use {other}",
        )


def _complete(frame: pd.DataFrame, columns: Iterable[str]) -> pd.Series:
    """Which rows have a value in every one of `columns` (a missing key in a JSONL row reads as NaN)."""
    return frame[list(columns)].notna().all(axis=1)


def _refuse_mixed(rows: dict[str, pd.Series], source: str) -> None:
    """One line naming a row of each layout, when rows of several layouts share the file. (Rows of one layout
    with gaps pass: to_examples names the rows whose prompt or response is empty.)"""
    examples = [f"row {int(np.argmax(has.to_numpy())) + 1} is {fmt}" for fmt, has in rows.items() if has.any()]
    if len(examples) > 1:
        raise DistillError(
            f"{source} mixes formats ({', '.join(examples)})",
            "split it into one file per format and run each on its own, or convert the rows to one layout",
        )


def _setting(cfg: DataConfig, fmt: str, column: str) -> str:
    """The data.* key that names `column` for `fmt`."""
    names = {
        "chat": {cfg.messages_column: "messages_column"},
        "instruction": {cfg.instruction_column: "instruction_column", cfg.output_column: "output_column"},
        "summarization": {cfg.text_column: "text_column", cfg.summary_column: "summary_column"},
    }
    return names[fmt][column]


def user_turn(content: str) -> list[dict[str, str]]:
    """One user turn: the prompt turns of a summarization or instruction example."""
    return [{"role": "user", "content": content}]


def to_examples(frame: pd.DataFrame, fmt: str, cfg: DataConfig, source: str) -> pd.DataFrame:
    """`frame`'s rows as examples: `turns` (the prompt turns, JSON), `prompt` (their contents as one text, what
    text statistics, dedup and the leak check read) and `response`. A row that cannot be trained on (an empty
    response, a chat without an assistant turn) is one line naming the row."""
    if fmt == "chat":
        pairs = [_chat(value, i, cfg, source) for i, value in enumerate(frame[cfg.messages_column])]
    elif fmt == "instruction":
        inputs = frame[cfg.input_column] if cfg.input_column in frame.columns else [None] * len(frame)
        pairs = [
            (user_turn(_join(_text(task), _text(context))), _text(out))
            for task, context, out in zip(frame[cfg.instruction_column], inputs, frame[cfg.output_column])
        ]
    else:
        pairs = [
            (user_turn(_text(doc)), _text(out)) for doc, out in zip(frame[cfg.text_column], frame[cfg.summary_column])
        ]
    response_column = {"chat": "the last assistant turn", "instruction": cfg.output_column}.get(fmt, cfg.summary_column)
    _refuse_empty([r for _, r in pairs], f"an empty response ('{response_column}')", source)
    _refuse_empty([prompt_text(t) for t, _ in pairs], "an empty prompt", source)
    return pd.DataFrame(
        {
            "prompt": [prompt_text(turns) for turns, _ in pairs],
            "response": [response for _, response in pairs],
            "turns": [json.dumps(turns, ensure_ascii=False) for turns, _ in pairs],
        },
        index=frame.index,
    )


def prompt_text(turns: list[dict[str, str]]) -> str:
    """The prompt's contents as one text (turns apart by a blank line): what lengths and statistics measure."""
    return "\n\n".join(turn["content"] for turn in turns if turn["content"])


def _text(value) -> str:
    """A cell as stripped text; a missing value (NaN, None) is empty."""
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()


def _join(instruction: str, context: str) -> str:
    return instruction + INPUT_SEPARATOR + context if context else instruction


def _refuse_empty(values: list[str], what: str, source: str) -> None:
    empty = [i + 1 for i, value in enumerate(values) if not value]
    if empty:
        rows = ", ".join(map(str, empty[:SHOWN_ROWS])) + (
            f" and {len(empty) - SHOWN_ROWS} more" if len(empty) > SHOWN_ROWS else ""
        )
        raise DistillError(
            f"row {rows} of {source} {'has' if len(empty) == 1 else 'have'} {what}",
            "fill it in or remove the row: an example without it cannot be trained on or scored",
        )


def _chat(value, row: int, cfg: DataConfig, source: str) -> tuple[list[dict[str, str]], str]:
    """(prompt turns, response) of one `messages` value: the last assistant turn is the response, every turn
    before it the prompt (later turns are not part of any example)."""
    where = f"row {row + 1} of {source}"
    messages = _messages(value, where, cfg.messages_column)
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not {"role", "content"} <= set(message):
            raise DistillError(
                f"{where}: message {i + 1} is {_short(message)}, not a {{role, content}} object",
                'write each message as {"role": "user", "content": "…"}',
            )
        role = str(message["role"]).strip().lower()
        if role not in ROLES:
            raise DistillError(
                f"{where}: message {i + 1} has the role '{message['role']}'",
                f"use one of {', '.join(ROLES)} (map other roles to these before loading)",
            )
        turns.append({"role": role, "content": _text(message["content"])})
    answers = [i for i, turn in enumerate(turns) if turn["role"] == "assistant"]
    if not answers:
        raise DistillError(f"{where} has no assistant turn", "end each conversation with the assistant's answer")
    last = answers[-1]
    if not any(turn["role"] == "user" for turn in turns[:last]):
        raise DistillError(
            f"{where}: no user turn before the last assistant turn", "start the conversation with a user turn"
        )
    return turns[:last], turns[last]["content"]


def _messages(value, where: str, column: str) -> list:
    """A messages cell as a list: JSON Lines and Parquet give one; CSV gives a JSON string."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            pass
    if isinstance(value, np.ndarray):  # Parquet list columns
        value = value.tolist()
    if not isinstance(value, list):
        raise DistillError(
            f"{where}: '{column}' is {_short(value)}, not a list of messages",
            'give it a list such as [{"role": "user", "content": "…"}, {"role": "assistant", "content": "…"}]',
        )
    return value


def _short(value, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"
