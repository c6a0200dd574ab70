"""The prompt: spliced ids for every format, truncation that cuts user content only (from either side), the
response's EOS only when it ended, the same prompt in training and evaluation."""

from __future__ import annotations

import copy

import pytest

from distill.config.schema import PromptConfig
from distill.data.formats import user_turn
from distill.errors import DistillError
from distill.model.prompt import DEFAULT_INSTRUCTIONS, PLAIN_TEMPLATES, PromptFormat, resolve

DOC = "The Secretary shall establish a pilot program for rural hospitals. " * 40
SUMMARY = "Establishes a rural hospital pilot program and authorizes appropriations for it over five years. " * 5
CHAT = [
    {"role": "system", "content": "You answer questions about water law."},
    {"role": "user", "content": "What does the Clean Water Act regulate?"},
    {"role": "assistant", "content": "Discharges of pollutants into the waters of the United States."},
    {"role": "user", "content": "And who enforces it?"},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from distill.model.load import load_tokenizer

    return load_tokenizer(tiny_model)


@pytest.fixture(scope="module")
def plain(tokenizer):
    without = copy.deepcopy(tokenizer)
    without.chat_template = None
    return without


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def fmt_for(tokenizer, data_format="summarization", src=10_000, tgt=10_000, **prompt):
    return PromptFormat(tokenizer, PromptConfig(**prompt), data_format, src, tgt)


def contents(tokenizer, enc):
    return [tokenizer.decode(enc.prompt[a:b]) for a, b in enc.content]


def test_summarization_prompt_is_the_instruction_and_the_document_in_the_chat_template(tokenizer):
    enc = fmt_for(tokenizer).encode(user_turn("A short bill about dams."))
    text = tokenizer.decode(enc.prompt)
    assert DEFAULT_INSTRUCTIONS["summarization"] + "\n\nA short bill about dams." in text
    assert "<|im_start|>user" in text and text.endswith("<|im_start|>assistant\n")
    assert contents(tokenizer, enc) == ["A short bill about dams."]
    assert enc.target == []


def test_document_truncated_to_exactly_max_source_tokens_template_intact(tokenizer):
    fmt = fmt_for(tokenizer, src=37, tgt=16)
    whole = fmt_for(tokenizer).encode(user_turn("x"))
    enc = fmt.encode(user_turn(DOC))
    (start, end), doc = enc.content[0], ids(tokenizer, DOC)
    assert len(doc) > 37 and end - start == 37
    assert enc.prompt[start:end] == doc[:37]  # the start of the document is kept (right side cut)
    (x_start, x_end) = whole.content[0]
    assert enc.prompt[:start] == whole.prompt[:x_start] and enc.prompt[end:] == whole.prompt[x_end:]


def test_left_truncation_keeps_the_end_of_the_content(tokenizer):
    enc = fmt_for(tokenizer, src=20, truncation_side="left").encode(user_turn(DOC))
    (start, end), doc = enc.content[0], ids(tokenizer, DOC)
    assert enc.prompt[start:end] == doc[-20:]


def test_chat_prompt_keeps_every_turn_and_pools_over_their_contents(tokenizer):
    enc = fmt_for(tokenizer, "chat").encode(CHAT, "The EPA and the states.")
    text = tokenizer.decode(enc.prompt)
    assert text.count("<|im_start|>user") == 2 and text.count("<|im_start|>assistant") == 2  # one is the generation
    assert contents(tokenizer, enc) == [t["content"] for t in CHAT]
    assert tokenizer.decode(enc.target[:-1]) == "The EPA and the states."


def test_chat_truncation_cuts_the_earliest_content_first(tokenizer):
    full = fmt_for(tokenizer, "chat").encode(CHAT)
    last = len(ids(tokenizer, CHAT[-1]["content"]))
    enc = fmt_for(tokenizer, "chat", src=last + 2).encode(CHAT)  # auto: chat data cuts from the left
    kept = contents(tokenizer, enc)
    assert kept[-1] == CHAT[-1]["content"] and kept[0] == "" and kept[1] == ""
    assert len(enc.prompt) == len(full.prompt) - sum(len(ids(tokenizer, t["content"])) for t in CHAT) + last + 2


def test_target_ends_with_eos_only_when_the_response_ended(tokenizer):
    fmt = fmt_for(tokenizer, src=64, tgt=12)
    cut = fmt.encode(user_turn(DOC), SUMMARY)
    assert cut.target_cut and cut.target == ids(tokenizer, SUMMARY.strip())[:12]  # no EOS after a cut
    short = fmt.encode(user_turn(DOC), "  Short summary.  ")
    assert not short.target_cut and short.target == ids(tokenizer, "Short summary.") + [tokenizer.eos_token_id]
    eos = fmt_for(tokenizer, src=64, tgt=12, eos_after_truncated_response=True).encode(user_turn(DOC), SUMMARY)
    assert eos.target == cut.target + [tokenizer.eos_token_id]


def test_same_prompt_for_training_and_evaluation(tokenizer):
    fmt = fmt_for(tokenizer, src=50, tgt=8)
    train = fmt.encode(user_turn(DOC), SUMMARY)
    evaluation = fmt.encode(user_turn(DOC))
    assert train.prompt == evaluation.prompt and train.content == evaluation.content
    assert fmt_for(tokenizer, src=50, tgt=8).encode(user_turn(DOC)).prompt == evaluation.prompt


def test_turns_json_and_lists_encode_alike(tokenizer):
    import json

    fmt = fmt_for(tokenizer, "chat")
    assert fmt.encode(json.dumps(CHAT), "x").prompt == fmt.encode(CHAT, "x").prompt


def test_instruction_and_system_are_the_users(tokenizer):
    enc = fmt_for(tokenizer, "instruction", instruction="Answer in French.", system="Be brief.").encode(
        user_turn("Name a river.")
    )
    text = tokenizer.decode(enc.prompt)
    assert "<|im_start|>system\nBe brief." in text and "Answer in French.\n\nName a river." in text
    assert contents(tokenizer, enc) == ["Name a river."]  # the instruction is template: never cut


def test_instruction_data_has_no_default_instruction(tokenizer):
    text = tokenizer.decode(fmt_for(tokenizer, "instruction").encode(user_turn("Name a river.")).prompt)
    assert DEFAULT_INSTRUCTIONS["summarization"] not in text


def test_without_chat_template_the_plain_template_is_used(plain):
    enc = fmt_for(plain).encode(user_turn("A bill."), "Does a thing.")
    text = plain.decode(enc.prompt)
    before, after = PLAIN_TEMPLATES["summarization"].split("{prompt}")
    assert text.endswith(before + "A bill." + after) and "<|im_start|>user" not in text
    custom = fmt_for(plain, "instruction", template="Q: {prompt}\nA:").encode(user_turn("Why?"))
    assert plain.decode(custom.prompt).endswith("Q: Why?\nA:")


def test_plain_chat_labels_every_turn(plain):
    text = plain.decode(fmt_for(plain, "chat").encode(CHAT).prompt)
    assert "### System:\nYou answer questions" in text and text.endswith(
        "### User:\nAnd who enforces it?\n\n### Assistant:\n"
    )


def test_content_left_out_keeps_the_template(tokenizer):
    """IFD's response-alone loss: the same template, no user content."""
    fmt = fmt_for(tokenizer, "chat")
    alone = fmt.encode(CHAT, "x", keep_content=False)
    assert all(a == b for a, b in alone.content) and tokenizer.decode(alone.prompt).count("<|im_start|>user") == 2


def test_resolve_makes_every_auto_concrete_and_leaves_its_input():
    cfg = PromptConfig()
    chat = resolve(cfg, "chat", has_chat_template=True)
    assert (chat.style, chat.truncation_side, chat.instruction, chat.template) == ("chat", "left", "", None)
    base = resolve(cfg, "summarization", has_chat_template=False)
    assert (base.style, base.truncation_side) == ("plain", "right")
    assert base.template == PLAIN_TEMPLATES["summarization"]
    assert cfg == PromptConfig()
    with pytest.raises(DistillError, match="no chat template"):
        resolve(PromptConfig(style="chat"), "chat", has_chat_template=False)
