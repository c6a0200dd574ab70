"""A user metric for GSM8K-style answers: does the generated solution end in the reference's final number?

GSM8K solutions end with `#### <answer>`. ROUGE-L rewards a solution that reads like the reference; this rewards
the right answer. Load it with `--plugin examples/exact_answer.py --set eval.metrics=exact_answer` (the gsm8k job
does), and the report tests it against random like any of distill's metrics (docs/data.md, Your own metric).
"""

from __future__ import annotations

import re

from distill.trial.metrics import metric

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
MARKER = "####"  # GSM8K's final-answer marker


def final_number(text: str) -> str | None:
    """The number after the last ####, else the last number in the text (commas dropped); None: no number."""
    tail = text.rsplit(MARKER, 1)[-1] if MARKER in text else text
    numbers = NUMBER.findall(tail)
    return numbers[-1].replace(",", "").rstrip(".") if numbers else None


@metric("exact_answer", higher_is_better=True, label="exact answer", description="final number equals the reference's")
def exact_answer(prediction: str, reference: str, example: dict) -> float:
    expected = final_number(reference)
    return float(expected is not None and final_number(prediction) == expected)
