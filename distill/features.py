"""Per-document features that selectors read: text statistics plus target-model signals.

Text statistics are pure functions of the documents; `embeddings` and `loss` come from the
target model (distill.embed), `probe_loss` and `grad_features` from the probe (distill.probe). Computed once per run and shared by every selector through the
Ray object store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")
_SENTENCE_END = re.compile(r"[.!?;]+(?:\s|$)|\n\s*\n")


@dataclass(frozen=True)
class Features:
    """Aligned per-document arrays; row i describes training-pool document i."""

    n_words: np.ndarray  # int64, words in the document
    n_sentences: np.ndarray  # int64, sentences (>= 1)
    type_token_ratio: np.ndarray  # float64, distinct words / words (lexical diversity)
    info_density: np.ndarray  # float64, distinct words per sentence
    embeddings: np.ndarray | None = None  # float32 (n, d), pooled target-model hidden states
    loss: np.ndarray | None = None  # float32 (n,), mean summary-token loss under the target model
    # training dynamics (distill/probe.py), attached only when a selected method needs them:
    probe_loss: np.ndarray | None = None  # float32 (n, checkpoints + 1), summary loss at each probe checkpoint, step 0 first
    grad_features: np.ndarray | None = None  # float32 (n, grad_dim), randomly projected per-example LoRA gradient

    def __len__(self) -> int:
        return len(self.n_words)


def text_statistics(text: str) -> tuple[int, int, float, float]:
    """(words, sentences, type-token ratio, distinct words per sentence) of one document.

    Words are alphanumeric runs, lower-cased; sentences end at . ! ? ; or a blank line (legal
    text uses ';' and blank lines as clause breaks). Both choices are documented in the README.
    """
    words = [w.lower() for w in _WORD.findall(text)]
    n_sentences = max(1, len([s for s in _SENTENCE_END.split(text) if _WORD.search(s)]))
    distinct = len(set(words))
    ttr = distinct / len(words) if words else 0.0
    return len(words), n_sentences, ttr, distinct / n_sentences


def text_features(texts: list[str], embeddings: np.ndarray | None = None, loss: np.ndarray | None = None) -> Features:
    """Features for a list of documents, with optional target-model signals attached."""
    stats = np.array([text_statistics(t) for t in texts], dtype=np.float64).reshape(-1, 4)
    return Features(
        n_words=stats[:, 0].astype(np.int64),
        n_sentences=stats[:, 1].astype(np.int64),
        type_token_ratio=stats[:, 2],
        info_density=stats[:, 3],
        embeddings=None if embeddings is None else np.ascontiguousarray(embeddings, dtype=np.float32),
        loss=None if loss is None else np.asarray(loss, dtype=np.float32),
    )
