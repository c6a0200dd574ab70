"""The prompt: every example (prompt turns + response, distill/data/formats.py) encoded the same way in
embedding, the probe, training and evaluation.

The template is rendered once per sequence of roles with a placeholder in place of each turn's content, then cut
at the placeholders: the template pieces and the contents are tokenised apart and spliced. So an over-long prompt
loses user content only (from `prompt.truncation_side`), never a piece of the template, and the content's token
spans are known exactly (embedding pools over them). Chat-template models get their own chat template; base
models a plain one with `{prompt}` where the content goes.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

from distill.config.schema import PROMPT_PLACEHOLDER, PromptConfig
from distill.errors import DistillError

# the instruction of each format when prompt.instruction is unset (the data of the others carry their own)
DEFAULT_INSTRUCTIONS = {"summarization": "Summarize the following document in one or two sentences."}
INSTRUCTION_SEPARATOR = "\n\n"  # between the instruction and the content it applies to
PLAIN_TEMPLATES = {
    "summarization": "### Document:\n{prompt}\n\n### Summary:\n",
    "instruction": "### Instruction:\n{prompt}\n\n### Response:\n",
    "chat": "{prompt}### Assistant:\n",
}
PLAIN_TURN = "### {role}:\n{content}\n\n"  # each turn inside a plain chat prompt
# a turn's content while the template is rendered: characters no real text contains, numbered by turn
_SLOT = "\u2063{}\u2063"
_SLOTS = re.compile("\u2063(\\d+)\u2063")


@dataclass
class Encoded:
    prompt: list[int]  # template pieces and user content: what the model sees before it writes
    target: list[int]  # response tokens (+ EOS unless the response was cut); empty at generation time
    content: list[tuple[int, int]]  # [start, end) of each turn's content inside `prompt` (the pooling spans)
    target_cut: bool = False  # the response was longer than model.max_target_tokens

    def content_positions(self) -> list[int]:
        """Every prompt position that holds user content, in order."""
        return [p for start, end in self.content for p in range(start, end)]


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


def resolve(cfg: PromptConfig, data_format: str, has_chat_template: bool) -> PromptConfig:
    """`cfg` with every `auto`/None made concrete for `data_format` and the model (a new config; `cfg` is left
    as it is). What run.json records as the template, and what `PromptFormat` uses."""
    style = cfg.style if cfg.style != "auto" else ("chat" if has_chat_template else "plain")
    if style == "chat" and not has_chat_template:
        raise DistillError(
            "prompt.style is chat, but the model's tokenizer has no chat template",
            "use --set prompt.style=plain (or auto), or a model with a chat template",
        )
    side = cfg.truncation_side if cfg.truncation_side != "auto" else ("left" if data_format == "chat" else "right")
    return PromptConfig(
        style=style,
        instruction=DEFAULT_INSTRUCTIONS.get(data_format, "") if cfg.instruction is None else cfg.instruction,
        system=cfg.system,
        template=(cfg.template or PLAIN_TEMPLATES[data_format]) if style == "plain" else None,
        truncation_side=side,
        eos_after_truncated_response=cfg.eos_after_truncated_response,
    )


def turns_of(value: str | list[dict[str, str]]) -> list[dict[str, str]]:
    """Prompt turns: a list of {role, content} as it is, or a data row's `turns` column (JSON text)."""
    return json.loads(value) if isinstance(value, str) else list(value)


class PromptFormat:
    """Turns (prompt turns, response) into token ids the same way for every stage."""

    def __init__(
        self, tokenizer, prompt: PromptConfig, data_format: str, max_source_tokens: int, max_target_tokens: int
    ):
        self.tokenizer = tokenizer
        self.cfg = resolve(prompt, data_format, bool(getattr(tokenizer, "chat_template", None)))
        self.max_source_tokens = max_source_tokens
        self.max_target_tokens = max_target_tokens
        self._pieces = functools.lru_cache(maxsize=None)(self._template_pieces)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode(
        self, turns: str | list[dict[str, str]], response: str | None = None, keep_content: bool = True
    ) -> Encoded:
        """`turns` (a list of {role, content}, or a row's `turns` JSON) and `response` as ids. `keep_content` False
        leaves every turn's content out and keeps the template: IFD's response-alone loss."""
        turns = turns_of(turns)
        pieces = self._pieces(tuple(t["role"] for t in turns))
        contents = [self._ids(t["content"]) if keep_content else [] for t in turns]
        contents = _truncate(contents, self.max_source_tokens, self.cfg.truncation_side)
        prompt, spans = list(pieces[0]), []
        for content, piece in zip(contents, pieces[1:]):
            spans.append((len(prompt), len(prompt) + len(content)))
            prompt += content + list(piece)
        target, cut = [], False
        if response is not None:
            ids = self._ids(response.strip())
            cut = len(ids) > self.max_target_tokens
            eos = [] if cut and not self.cfg.eos_after_truncated_response else [self.tokenizer.eos_token_id]
            target = ids[: self.max_target_tokens] + eos
        return Encoded(prompt, target, spans, cut)

    def render(self, turns: str | list[dict[str, str]]) -> str:
        """The prompt text of `turns` as the model sees it (untruncated): for run.json and people."""
        turns = turns_of(turns)
        text = self._text(tuple(t["role"] for t in turns))
        return _SLOTS.sub(lambda m: turns[int(m.group(1))]["content"], text)

    def _template_pieces(self, roles: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
        """The template around turns with these roles, tokenised: len(roles) + 1 pieces between the contents."""
        text = self._text(roles)
        parts = _SLOTS.split(text)
        order = [int(i) for i in parts[1::2]]
        if order != list(range(len(roles))):
            raise DistillError(
                f"the model's chat template dropped or reordered turns of a conversation with the roles {list(roles)}",
                "give the examples the roles the template accepts (e.g. no system turn), or --set prompt.style=plain",
            )
        return tuple(tuple(self._ids(piece)) for piece in parts[0::2])

    def _text(self, roles: tuple[str, ...]) -> str:
        """The whole prompt with a numbered slot for each turn's content."""
        turns = [{"role": role, "content": _SLOT.format(i)} for i, role in enumerate(roles)]
        last_user = max((i for i, role in enumerate(roles) if role == "user"), default=len(roles) - 1)
        if self.cfg.style == "chat":
            if self.cfg.instruction:  # template text before the content: never cut
                turns[last_user]["content"] = self.cfg.instruction + INSTRUCTION_SEPARATOR + turns[last_user]["content"]
            if self.cfg.system and "system" not in roles:
                turns.insert(0, {"role": "system", "content": self.cfg.system})
            return self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        own_system = self.cfg.system and "system" not in roles
        head = self.cfg.system + INSTRUCTION_SEPARATOR if own_system else ""
        instruction = self.cfg.instruction + INSTRUCTION_SEPARATOR if self.cfg.instruction else ""
        if roles == ("user",):
            body = turns[0]["content"]
        else:
            body = "".join(PLAIN_TURN.format(role=t["role"].title(), content=t["content"]) for t in turns)
        return (
            (self.tokenizer.bos_token or "") + head + instruction + self.cfg.template.replace(PROMPT_PLACEHOLDER, body)
        )


def _truncate(contents: list[list[int]], budget: int, side: str) -> list[list[int]]:
    """At most `budget` content tokens in all: `right` keeps the first ones (cuts the end of the last turns),
    `left` the last ones (cuts the start of the earliest turns)."""
    order = range(len(contents)) if side == "right" else reversed(range(len(contents)))
    kept = [[] for _ in contents]
    for i in order:
        take = min(len(contents[i]), budget)
        budget -= take
        kept[i] = contents[i][:take] if side == "right" else contents[i][len(contents[i]) - take :]
    return kept
