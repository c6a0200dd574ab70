"""The bundled GSM8K sample (data/gsm8k/): the files are the ones PROVENANCE.md describes, and the chat copy
holds the same examples as the instruction file, so a job on either format trains on the same text."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

GSM8K = Path(__file__).resolve().parents[2] / "data" / "gsm8k"


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (GSM8K / name).read_text(encoding="utf-8").splitlines()]


def test_files_match_the_sha256_and_row_counts_in_provenance():
    provenance = (GSM8K / "PROVENANCE.md").read_text(encoding="utf-8")
    table = re.findall(r"^\| `(gsm8k_\w+\.jsonl)` \| ([\d,]+) \| [\d,]+ \| `([0-9a-f]{64})` \|$", provenance, re.M)
    assert {name for name, _, _ in table} == {"gsm8k_instruct.jsonl", "gsm8k_chat.jsonl"}
    for name, rows, digest in table:
        assert hashlib.sha256((GSM8K / name).read_bytes()).hexdigest() == digest, (
            f"{name} changed: update PROVENANCE.md"
        )
        assert len(_rows(name)) == int(rows.replace(",", ""))


def test_chat_rows_are_instruction_rows_as_one_exchange():
    instruct = {row["id"]: row for row in _rows("gsm8k_instruct.jsonl")}
    for chat in _rows("gsm8k_chat.jsonl"):
        row = instruct[chat["id"]]
        assert chat["messages"] == [
            {"role": "user", "content": row["instruction"]},
            {"role": "assistant", "content": row["output"]},
        ]
        assert (chat["split"], chat["final_answer"]) == (row["split"], row["final_answer"])
        assert row["output"].endswith(f"#### {row['final_answer']}") and "<<" not in row["output"]
