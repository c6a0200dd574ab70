"""Text statistics on hand-made documents, and the aligned feature arrays."""

from __future__ import annotations

import numpy as np
import pytest

from distill.features.columns import Features, text_features, text_statistics


def test_words_sentences_ttr_density():
    text = "The cat sat. The dog ran; it was fast!\n\nNew para here"
    # words: the cat sat the dog ran it was fast new para here → 12, distinct 11 ("the" twice)
    # sentences: "The cat sat." | "The dog ran;" | "it was fast!" | (blank line) "New para here" → 4
    words, sentences, ttr, density = text_statistics(text)
    assert words == 12
    assert sentences == 4
    assert ttr == pytest.approx(11 / 12)
    assert density == pytest.approx(11 / 4)


def test_semicolon_and_blank_line_break_sentences():
    assert text_statistics("one two; three four; five six")[1] == 3
    assert text_statistics("first clause\n\nsecond clause\n   \nthird clause")[1] == 3
    assert text_statistics("a single line\nwrapped onto the next")[1] == 1  # one newline is not a break


def test_words_are_lowercased_and_keep_apostrophes():
    words, sentences, ttr, density = text_statistics("Don't stop. don't STOP.")
    assert (words, sentences) == (4, 2)
    assert ttr == pytest.approx(0.5)
    assert density == pytest.approx(1.0)


def test_punctuation_runs_and_numbers():
    words, sentences, _, _ = text_statistics("Wait... what?! Section 102 applies.")
    assert words == 5  # wait what section 102 applies
    assert sentences == 3


@pytest.mark.parametrize("text", ["", "   ", "...", "\n\n"])
def test_empty_text(text):
    assert text_statistics(text) == (0, 1, 0.0, 0.0)


def test_text_features_shapes_and_dtypes():
    texts = ["One sentence here.", "Two. Sentences!", ""]
    emb = np.arange(12, dtype=np.float64).reshape(3, 4)
    feats = text_features(texts, embeddings=emb, loss=[1.0, 2.0, 3.0])
    assert len(feats) == 3
    assert feats.n_words.dtype == np.int64 and feats.n_sentences.dtype == np.int64
    assert feats.type_token_ratio.dtype == np.float64 and feats.info_density.dtype == np.float64
    assert feats.n_words.tolist() == [3, 2, 0]
    assert feats.n_sentences.tolist() == [1, 2, 1]
    assert feats.embeddings.dtype == np.float32 and feats.embeddings.shape == (3, 4)
    assert feats.embeddings.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(feats.embeddings, emb.astype(np.float32))
    assert feats.loss.dtype == np.float32 and feats.loss.tolist() == [1.0, 2.0, 3.0]
    for i, text in enumerate(texts):
        w, s, ttr, d = text_statistics(text)
        assert (feats.n_words[i], feats.n_sentences[i]) == (w, s)
        assert feats.type_token_ratio[i] == pytest.approx(ttr) and feats.info_density[i] == pytest.approx(d)


def test_text_features_without_model_signals_and_empty_list():
    feats = text_features(["A b c."])
    assert feats.embeddings is None and feats.loss is None
    empty = text_features([])
    assert isinstance(empty, Features) and len(empty) == 0
    assert empty.n_words.dtype == np.int64 and empty.n_words.shape == (0,)
    assert empty.info_density.shape == (0,)
