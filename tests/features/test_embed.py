"""Target-model features: pooled embeddings and per-example response loss from one forward pass."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distill.config.schema import ModelConfig, PromptConfig
from distill.data.formats import user_turn
from distill.features.embed import EmbedActor, cache_key, output_columns

TEXTS = [
    "The Secretary of Energy shall carry out a program to support research on grid storage. " * 3,
    "Amends the Internal Revenue Code to extend the credit.",
    "A bill to designate the facility of the United States Postal Service located at 100 Main Street. " * 6,
]
SUMMARIES = [
    "Directs a grid storage research program.",
    "Extends a tax credit.",
    "Designates a post office building in honor of a local veteran who served in two wars.",
]


def batch(indices):
    return {
        "row": np.asarray(indices),
        "turns": np.asarray([json.dumps(user_turn(TEXTS[i])) for i in indices], dtype=object),
        "response": np.asarray([SUMMARIES[i] for i in indices], dtype=object),
    }


@pytest.fixture(scope="module")
def model_cfg(tiny_model):
    return ModelConfig(name=tiny_model, dtype="float32", max_source_tokens=48, max_target_tokens=12)


@pytest.fixture(scope="module")
def actor(tiny_model, model_cfg):
    return EmbedActor(tiny_model, model_cfg, PromptConfig(), "summarization", pooling="mean")


def test_output_shapes_and_values(actor):
    out = actor(batch([0, 1, 2]))
    hidden = actor.model.config.hidden_size
    assert out["row"].tolist() == [0, 1, 2]
    assert out["embedding"].shape == (3, hidden)
    assert out["embedding"].dtype == np.float32
    assert out["loss"].shape == (3,) and out["loss"].dtype == np.float32
    assert np.isfinite(out["embedding"]).all() and np.isfinite(out["loss"]).all()
    assert (out["loss"] > 0).all()
    assert not np.allclose(out["embedding"][0], out["embedding"][1])


def test_loss_matches_hand_computation(actor):
    out = actor(batch([0, 1, 2]))
    for i in range(3):
        enc = actor.format.encode(user_turn(TEXTS[i]), SUMMARIES[i])
        ids = torch.tensor([enc.prompt + enc.target])
        labels = torch.tensor([[-100] * len(enc.prompt) + enc.target])
        with torch.no_grad():
            expected = actor.model(input_ids=ids, labels=labels).loss.item()
        assert out["loss"][i] == pytest.approx(expected, abs=1e-4)


def test_mean_pooling_matches_hand_computation(actor):
    out = actor(batch([1]))
    enc = actor.format.encode(user_turn(TEXTS[1]), SUMMARIES[1])
    with torch.no_grad():
        hidden = actor.model.get_decoder()(input_ids=torch.tensor([enc.prompt + enc.target])).last_hidden_state[0]
    ((start, end),) = enc.content
    np.testing.assert_allclose(out["embedding"][0], hidden[start:end].mean(0).numpy(), atol=1e-4)


def test_position_weighted_mean_matches_hand_computation(actor):
    """RDS+'s pooling: every real token of prompt + response, weight t / sum(t), padding left out."""
    out = actor(batch([2, 1]))  # row 1 is the shorter: padded in this batch
    enc = actor.format.encode(user_turn(TEXTS[1]), SUMMARIES[1])
    with torch.no_grad():
        hidden = actor.model.get_decoder()(input_ids=torch.tensor([enc.prompt + enc.target])).last_hidden_state[0]
    weights = torch.arange(1, len(hidden) + 1, dtype=torch.float32)
    np.testing.assert_allclose(
        out["embedding_wmean"][1], (weights[:, None] * hidden).sum(0).numpy() / weights.sum().item(), atol=1e-4
    )


def test_loss_alone_is_the_response_without_the_user_content(tiny_model, model_cfg, actor):
    """IFD's denominator: the same response tokens, the same template, the user content left out; one more pass
    whose seconds every row shares; the other columns are exactly the plain actor's."""
    with_alone = EmbedActor(tiny_model, model_cfg, PromptConfig(), "summarization", pooling="mean", loss_alone=True)
    out, plain = with_alone(batch([0, 1, 2])), actor(batch([0, 1, 2]))
    assert set(out) == set(plain) | {"loss_alone", "seconds_loss_alone"}
    for column in set(plain) - {"seconds_embedding"}:  # the one column that is a timing
        np.testing.assert_array_equal(out[column], plain[column])
    for i in range(3):
        enc = with_alone.format.encode(user_turn(""), SUMMARIES[i])
        assert enc.target == with_alone.format.encode(user_turn(TEXTS[i]), SUMMARIES[i]).target
        ids = torch.tensor([enc.prompt + enc.target])
        with torch.no_grad():
            expected = with_alone.model(
                input_ids=ids, labels=torch.tensor([[-100] * len(enc.prompt) + enc.target])
            ).loss
        assert out["loss_alone"][i] == pytest.approx(expected.item(), abs=1e-4)
    for seconds in ("seconds_loss_alone", "seconds_embedding"):  # each pass's share, the same for every row
        assert (out[seconds] > 0).all() and len(set(out[seconds])) == 1


def test_independent_of_batch_composition(actor):
    together = actor(batch([2, 1, 0]))
    for position, i in enumerate([2, 1, 0]):
        alone = actor(batch([i]))
        np.testing.assert_allclose(alone["embedding"][0], together["embedding"][position], atol=1e-4)
        np.testing.assert_allclose(alone["loss"][0], together["loss"][position], atol=1e-4)
        np.testing.assert_allclose(alone["embedding_wmean"][0], together["embedding_wmean"][position], atol=1e-4)


def test_last_pooling_differs_from_mean(tiny_model, model_cfg, actor):
    last = EmbedActor(tiny_model, model_cfg, PromptConfig(), "summarization", pooling="last")
    mean_out, last_out = actor(batch([0, 1])), last(batch([0, 1]))
    assert last_out["embedding"].shape == mean_out["embedding"].shape
    assert not np.allclose(last_out["embedding"], mean_out["embedding"], atol=1e-3)
    np.testing.assert_allclose(last_out["loss"], mean_out["loss"], atol=1e-5)  # the loss does not depend on pooling
    # last pooling is the hidden state of the last prompt token, also in a padded batch
    alone = last(batch([1]))
    np.testing.assert_allclose(alone["embedding"][0], last_out["embedding"][1], atol=1e-4)


def test_cache_key_changes_with_settings(model_cfg):
    prompt = PromptConfig()
    base = cache_key("/m", "abc", model_cfg, prompt, "mean")
    assert base == cache_key("/m", "abc", ModelConfig(**vars(model_cfg)), PromptConfig(), "mean")
    variants = [
        cache_key("/other", "abc", model_cfg, prompt, "mean"),
        cache_key("/m", "abd", model_cfg, prompt, "mean"),
        cache_key("/m", "abc", model_cfg, prompt, "last"),
        cache_key("/m", "abc", ModelConfig(**{**vars(model_cfg), "max_source_tokens": 49}), prompt, "mean"),
        cache_key("/m", "abc", ModelConfig(**{**vars(model_cfg), "max_target_tokens": 13}), prompt, "mean"),
        cache_key("/m", "abc", ModelConfig(**{**vars(model_cfg), "dtype": "bfloat16"}), prompt, "mean"),
        cache_key("/m", "abc", model_cfg, PromptConfig(instruction="Shorter."), "mean"),
        cache_key("/m", "abc", model_cfg, PromptConfig(eos_after_truncated_response=True), "mean"),
        cache_key("/m", "abc", model_cfg, prompt, "mean", output_columns(loss_alone=True)),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_responses_cut_at_max_target_tokens_are_counted(actor):
    """The third summary is longer than 12 tokens: cut, and flagged."""
    out = actor(batch([0, 1, 2]))
    lengths = [len(actor.tokenizer(s, add_special_tokens=False)["input_ids"]) for s in SUMMARIES]
    assert out["response_cut"].tolist() == [float(n > 12) for n in lengths] and max(lengths) > 12
