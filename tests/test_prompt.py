"""The prompt template: spliced ids, exact truncation, same prompt in training and evaluation."""

from __future__ import annotations

import copy

import pytest

from distill.model.prompt import INSTRUCTION, PLAIN_TEMPLATE, PromptFormat

DOC = "The Secretary shall establish a pilot program for rural hospitals. " * 40
SUMMARY = "Establishes a rural hospital pilot program and authorizes appropriations for it over five years. " * 5


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from distill.model.load import load_tokenizer

    return load_tokenizer(tiny_model)


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_encode_splices_prefix_document_suffix(tokenizer):
    fmt = PromptFormat(tokenizer, max_source_tokens=10_000, max_target_tokens=10_000)
    enc = fmt.encode("A short bill about dams.")
    doc = ids(tokenizer, "A short bill about dams.")
    assert enc.prompt == fmt.prefix + doc + fmt.suffix
    assert enc.target == []
    assert enc.doc_span == (len(fmt.prefix), len(fmt.prefix) + len(doc))
    assert INSTRUCTION.strip() in tokenizer.decode(fmt.prefix)


def test_document_truncated_to_exactly_max_source_tokens(tokenizer):
    fmt = PromptFormat(tokenizer, max_source_tokens=37, max_target_tokens=16)
    enc = fmt.encode(DOC)
    assert len(ids(tokenizer, DOC)) > 37
    assert len(enc.prompt) == len(fmt.prefix) + 37 + len(fmt.suffix)
    start, end = enc.doc_span
    assert end - start == 37
    assert enc.prompt[start:end] == ids(tokenizer, DOC)[:37]
    assert enc.prompt[:start] == fmt.prefix and enc.prompt[end:] == fmt.suffix  # template intact


def test_doc_span_points_at_document_tokens(tokenizer):
    fmt = PromptFormat(tokenizer, max_source_tokens=64, max_target_tokens=16)
    document = "Section 2 amends the Clean Water Act."
    enc = fmt.encode(document, "Amends the Act.")
    start, end = enc.doc_span
    assert tokenizer.decode(enc.prompt[start:end]) == document


def test_target_ends_with_eos_and_is_truncated(tokenizer):
    fmt = PromptFormat(tokenizer, max_source_tokens=64, max_target_tokens=12)
    enc = fmt.encode(DOC, SUMMARY)
    assert enc.target[-1] == tokenizer.eos_token_id
    assert len(enc.target) == 12 + 1
    assert enc.target[:-1] == ids(tokenizer, SUMMARY.strip())[:12]
    short = fmt.encode(DOC, "  Short summary.  ")
    assert short.target == ids(tokenizer, "Short summary.") + [tokenizer.eos_token_id]


def test_same_prompt_for_training_and_evaluation(tokenizer):
    fmt = PromptFormat(tokenizer, max_source_tokens=50, max_target_tokens=8)
    train = fmt.encode(DOC, SUMMARY)
    evaluation = fmt.encode(DOC)
    assert train.prompt == evaluation.prompt
    assert train.doc_span == evaluation.doc_span
    # and two formats built from the same tokenizer agree
    assert PromptFormat(tokenizer, 50, 8).encode(DOC).prompt == evaluation.prompt


def test_instruct_tokenizer_uses_its_chat_template(tokenizer):
    assert tokenizer.chat_template
    fmt = PromptFormat(tokenizer, 64, 16)
    text = tokenizer.decode(fmt.prefix + fmt.suffix)
    assert "<|im_start|>user" in text and "<|im_start|>assistant" in text
    assert "### Document" not in text


def test_tokenizer_without_chat_template_uses_plain_template(tokenizer):
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    fmt = PromptFormat(plain, 64, 16)
    before, after = PLAIN_TEMPLATE.split("{document}")
    assert fmt.prefix == ids(plain, (plain.bos_token or "") + before)
    assert fmt.suffix == ids(plain, after)
    assert "### Summary:" in plain.decode(fmt.suffix)
    assert "<|im_start|>user" not in plain.decode(fmt.prefix)
    enc = fmt.encode("A bill.", "Does a thing.")
    assert enc.prompt == fmt.prefix + ids(plain, "A bill.") + fmt.suffix
    assert fmt.encode("A bill.").prompt == enc.prompt


def test_empty_document(tokenizer):
    fmt = PromptFormat(tokenizer, 64, 16)
    enc = fmt.encode("")
    assert enc.prompt == fmt.prefix + fmt.suffix
    assert enc.doc_span == (len(fmt.prefix), len(fmt.prefix))
