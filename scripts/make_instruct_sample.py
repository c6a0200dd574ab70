#!/usr/bin/env python
"""Build the bundled instruction-format and chat-format samples of GSM8K in data/gsm8k/.

    git clone https://github.com/openai/grade-school-math /tmp/gsm && git -C /tmp/gsm checkout 3101c7d5
    python scripts/make_instruct_sample.py /tmp/gsm/grade_school_math/data

Why GSM8K: it is a real, human-written instruction dataset (8.5K grade-school maths problems with
step-by-step solutions, Cobbe et al. 2021) under the MIT license, and its authors' own repository holds
the data as plain JSON Lines (not Git LFS pointers), so its provenance is exact. See data/gsm8k/PROVENANCE.md.

What it does, reproducibly (standard library only; the files it writes are committed, so nothing needs
this script at run time):
- checks the sha256 of the two source files, so a different copy cannot silently produce other rows;
- removes the calculator annotations `<<48/2=24>>` from each solution, as the GSM8K README says to
  (they drive the authors' calculator at sampling time and are noise for a plain fine-tune), and keeps
  the final `#### 72` line, whose number is also stored as `final_answer` for exact-match scoring;
- drops rows whose solution is empty or longer than MAX_OUTPUT_CHARS, and repeated questions;
- draws TRAIN_ROWS of the train split and TEST_ROWS of the test split with a seeded random.Random,
  written in source order, as Alpaca-style rows: id, split, instruction (the problem), input (always
  "": a GSM8K problem is self-contained), output (the solution), final_answer;
- copies a seeded CHAT_ROWS of those same rows (from both splits) as chat rows: id, split,
  messages [{role: user, content: problem}, {role: assistant, content: solution}], final_answer.
  GSM8K has no multi-turn conversations, so each chat is one exchange.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from pathlib import Path

# The files at openai/grade-school-math commit 3101c7d5072418e28b9008a6636bde82a006892c.
SOURCE_SHA256 = {
    "train": "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465",
    "test": "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
}
SEED = 0
TRAIN_ROWS = 2000  # a 10% selection is ~200 examples, as with SciTLDR's 1,991-row pool
TEST_ROWS = 500  # held-out problems from the official test split
CHAT_ROWS = 200
MAX_OUTPUT_CHARS = 2000  # keeps every solution trainable by a 135M model on 2 CPU cores
CALCULATOR = re.compile(r"<<[^>]*>>")
FINAL = re.compile(r"\n#### (.+)\s*$")
OUT_DIR = Path(__file__).resolve().parent.parent / "data" / "gsm8k"


def read_split(data_dir: Path, split: str) -> list[dict]:
    """The split's rows, after checking the file is the pinned one (and not, e.g., a Git LFS pointer)."""
    raw = (data_dir / f"{split}.jsonl").read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SOURCE_SHA256[split]:
        raise SystemExit(f"{split}.jsonl has sha256 {digest}, expected {SOURCE_SHA256[split]}: use commit 3101c7d5")
    return [json.loads(line) for line in raw.decode("utf-8").splitlines()]


def to_instruct(split: str, index: int, row: dict) -> dict | None:
    """One Alpaca-style row, or None when the solution is empty, too long or has no final answer."""
    output = CALCULATOR.sub("", row["answer"]).strip()
    final = FINAL.search(output)
    if not output or len(output) > MAX_OUTPUT_CHARS or final is None:
        return None
    return {
        "id": f"gsm8k-{split}-{index:05d}",
        "split": split,
        "instruction": row["question"].strip(),
        "input": "",
        "output": output,
        "final_answer": final.group(1).strip(),
    }


def sample_split(data_dir: Path, split: str, count: int, seen: set[str]) -> tuple[list[dict], dict]:
    """`count` seeded rows of one split (in source order) and the counts of what was kept and dropped."""
    rows = read_split(data_dir, split)
    kept = []
    for index, row in enumerate(rows):
        converted = to_instruct(split, index, row)
        if converted is not None and converted["instruction"] not in seen:
            seen.add(converted["instruction"])
            kept.append(converted)
    chosen = sorted(random.Random(f"{SEED}-{split}").sample(range(len(kept)), count))
    return [kept[i] for i in chosen], {"source": len(rows), "eligible": len(kept), "sampled": count}


def to_chat(row: dict) -> dict:
    """The same example as one user/assistant exchange (input joined under the instruction when present)."""
    user = row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]
    return {"id": row["id"], "split": row["split"], "messages": messages, "final_answer": row["final_answer"]}


def write_jsonl(path: Path, rows: list[dict]) -> str:
    """Write one JSON object a line and return the file's sha256. ASCII with escapes, as SciTLDR's file is:
    the text has U+2028 line separators, which str.splitlines() would cut a raw UTF-8 line at."""
    text = "".join(json.dumps(row) + "\n" for row in rows)
    data = text.encode("ascii")
    path.write_bytes(data)  # bytes: no newline translation, so the sha256 is the same on every platform
    return hashlib.sha256(data).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="grade_school_math/data of a checkout at commit 3101c7d5")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    seen: set[str] = set()
    train, train_counts = sample_split(args.data_dir, "train", TRAIN_ROWS, seen)
    test, test_counts = sample_split(args.data_dir, "test", TEST_ROWS, seen)
    rows = train + test
    chat_ids = set(random.Random(f"{SEED}-chat").sample([row["id"] for row in rows], CHAT_ROWS))
    chat = [to_chat(row) for row in rows if row["id"] in chat_ids]
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "train": train_counts,
        "test": test_counts,
        "gsm8k_instruct.jsonl": {"rows": len(rows), "sha256": write_jsonl(args.out / "gsm8k_instruct.jsonl", rows)},
        "gsm8k_chat.jsonl": {"rows": len(chat), "sha256": write_jsonl(args.out / "gsm8k_chat.jsonl", chat)},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
