"""The prompt template, identical in embedding, training and evaluation.

Token ids are spliced (prefix + truncated document + suffix) rather than re-tokenising a
truncated string, so the document is cut at exactly `max_source_tokens` and the template around
it is never damaged. Instruct models get their own chat template; base models a plain one.
"""

from __future__ import annotations

from dataclasses import dataclass

INSTRUCTION = "Summarize the following document in one or two sentences.\n\n"
PLAIN_TEMPLATE = "### Document:\n{document}\n\n### Summary:\n"
_SLOT = "\u2063DOCUMENT\u2063"  # placeholder that no real document contains


@dataclass
class Encoded:
    prompt: list[int]  # prefix + document + suffix: what the model sees before it writes
    target: list[int]  # summary tokens + EOS (empty at generation time)
    doc_span: tuple[int, int]  # [start, end) of the document inside `prompt` (pooling span)


def pad(seqs: list[list[int]], value: int, side: str = "right") -> tuple[list[list[int]], list[list[int]]]:
    """Pad token-id lists to one width; returns (padded, attention mask). Training and embedding pad
    on the right; generation pads on the left so every prompt ends where its first new token goes."""
    width = max(map(len, seqs))
    fill = [[value] * (width - len(s)) for s in seqs]
    ones = [[1] * len(s) for s in seqs]
    zeros = [[0] * (width - len(s)) for s in seqs]
    if side == "left":
        return [f + s for f, s in zip(fill, seqs)], [z + o for z, o in zip(zeros, ones)]
    return [s + f for s, f in zip(seqs, fill)], [o + z for o, z in zip(ones, zeros)]


class PromptFormat:
    """Turns (document, summary) into token ids the same way for every stage."""

    def __init__(self, tokenizer, max_source_tokens: int, max_target_tokens: int):
        self.tokenizer = tokenizer
        self.max_source_tokens = max_source_tokens
        self.max_target_tokens = max_target_tokens
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": INSTRUCTION + _SLOT}], tokenize=False, add_generation_prompt=True
            )
        else:
            text = (tokenizer.bos_token or "") + PLAIN_TEMPLATE.format(document=_SLOT)
        prefix, suffix = text.split(_SLOT)
        self.prefix = self._ids(prefix)
        self.suffix = self._ids(suffix)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode(self, document: str, summary: str | None = None) -> Encoded:
        doc = self._ids(document)[: self.max_source_tokens]
        target = []
        if summary is not None:
            target = self._ids(summary.strip())[: self.max_target_tokens] + [self.tokenizer.eos_token_id]
        start = len(self.prefix)
        return Encoded(self.prefix + doc + self.suffix, target, (start, start + len(doc)))
