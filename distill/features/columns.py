"""Per-example features that selectors read: text statistics plus target-model signals.

Text statistics are pure functions of the prompts (every turn's content, distill/data/formats.py); `embeddings`, `loss`, `embedding_wmean`,
`loss_alone` and the query set's `query_embedding` come from the target model (distill.features.embed),
`probe_loss` and `grad_features` from the probe (distill.features.probe). Computed
once per run and shared by every selector through the Ray object store. The model signals are usually
memory-mapped files (distill.features.store); a pickled Features carries such a file by path, not by value
(see `Features.__reduce__`).
"""

from __future__ import annotations

import mmap
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace

import numpy as np

QUERY_EMBEDDING = "query_embedding"  # the Features field of a query-based selector (rds_plus): needs a query set
_WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")
_SENTENCE_END = re.compile(r"[.!?;]+(?:\s|$)|\n\s*\n")


@dataclass(frozen=True)
class Features:
    """Aligned per-example arrays; row i describes training-pool example i."""

    n_words: np.ndarray  # int64, words in the prompt
    n_sentences: np.ndarray  # int64, sentences (>= 1)
    type_token_ratio: np.ndarray  # float64, distinct words / words (lexical diversity)
    info_density: np.ndarray  # float64, distinct words per sentence
    embeddings: np.ndarray | None = None  # float32 (n, d), pooled target-model hidden states
    loss: np.ndarray | None = None  # float32 (n,), mean response-token loss under the target model
    # training dynamics (distill/features/probe.py), attached only when a selected method needs them:
    probe_loss: np.ndarray | None = (
        None  # float32 (n, checkpoints + 1), response loss at each probe checkpoint, step 0 first
    )
    grad_features: np.ndarray | None = None  # float32 (n, grad_dim), randomly projected per-example LoRA gradient
    # RDS+ and IFD (distill/features/embed.py); loss_alone only when a selected method needs it:
    embedding_wmean: np.ndarray | None = (
        None  # float32 (n, d), position-weighted mean of prompt + response hidden states
    )
    loss_alone: np.ndarray | None = None  # float32 (n,), response loss without the user content (the template only)
    # the query set (target-task examples, never pool rows): NOT aligned with the pool, one row per query example
    query_embedding: np.ndarray | None = None  # float32 (m, d), embedding_wmean of each query example
    query_task: np.ndarray | None = None  # int64 (m,), the query source (task) of each query example

    def __len__(self) -> int:
        return len(self.n_words)

    def by_value(self) -> Features:
        """These features with the memory maps as plain array views: pickled, they carry their bytes
        (for tasks on nodes that cannot open the driver's cache file)."""
        return replace(
            self,
            **{
                f.name: np.asarray(value) for f in fields(self) if isinstance(value := getattr(self, f.name), np.memmap)
            },
        )

    def __reduce__(self):
        """Pickle whole-file memory maps as their file, not their bytes: `ray.put(features)` and task
        arguments then ship a path (the receiver maps the same file read-only) instead of copying the
        pool's embeddings, GBs at a million rows, into the object store. Other arrays pickle as usual."""
        return _rebuild, ({f.name: _MappedFile.of(getattr(self, f.name)) for f in fields(self)},)


@dataclass(frozen=True)
class _MappedFile:
    """Where a read-only memory map's bytes live: enough to map them again in another process."""

    filename: str
    offset: int
    dtype: str
    shape: tuple[int, ...]
    order: str

    @staticmethod
    def of(value):
        """A _MappedFile for a memmap of a whole file region (not a view or a copy of one), else `value`."""
        whole = isinstance(value, np.memmap) and isinstance(value.base, mmap.mmap) and value.filename
        if not whole:
            return value
        return _MappedFile(
            value.filename,
            value.offset,
            value.dtype.str,
            value.shape,
            "F" if value.flags.f_contiguous and not value.flags.c_contiguous else "C",
        )

    def open(self) -> np.memmap:
        return np.memmap(
            self.filename, dtype=np.dtype(self.dtype), mode="r", offset=self.offset, shape=self.shape, order=self.order
        )


def _rebuild(state: dict) -> Features:
    return Features(**{k: v.open() if isinstance(v, _MappedFile) else v for k, v in state.items()})


def text_statistics(text: str) -> tuple[int, int, float, float]:
    """(words, sentences, type-token ratio, distinct words per sentence) of one prompt.

    Words are alphanumeric runs, lower-cased; sentences end at . ! ? ; or a blank line (legal
    text uses ';' and blank lines as clause breaks). Both choices are documented in the README.
    """
    words = [w.lower() for w in _WORD.findall(text)]
    n_sentences = max(1, len([s for s in _SENTENCE_END.split(text) if _WORD.search(s)]))
    distinct = len(set(words))
    ttr = distinct / len(words) if words else 0.0
    return len(words), n_sentences, ttr, distinct / n_sentences


_STATS = np.dtype(
    [("n_words", np.int64), ("n_sentences", np.int64), ("type_token_ratio", np.float64), ("info_density", np.float64)]
)


def text_features(texts: list[str], embeddings: np.ndarray | None = None, loss: np.ndarray | None = None) -> Features:
    """Features for a list of prompts, with optional target-model signals attached.

    The statistics stream into one structured array (no list of a million Python tuples first), and
    float32 C-contiguous signals, memory maps included, are kept as they are: no copy."""
    stats = np.fromiter((text_statistics(t) for t in texts), dtype=_STATS, count=len(texts))
    return Features(
        n_words=stats["n_words"].copy(),
        n_sentences=stats["n_sentences"].copy(),
        type_token_ratio=stats["type_token_ratio"].copy(),
        info_density=stats["info_density"].copy(),
        embeddings=None if embeddings is None else _float32(embeddings),
        loss=None if loss is None else _float32(loss),
    )


def _float32(values) -> np.ndarray:
    """float32 C-contiguous `values`: the array itself when it already is one (a memory map stays a map)."""
    if isinstance(values, np.ndarray) and values.dtype == np.float32 and values.flags.c_contiguous:
        return values
    return np.ascontiguousarray(values, dtype=np.float32)


# Features computed from another one's results: the gradients are taken at the probe's final weights.
PREREQUISITES = {"grad_features": ("probe_loss",)}


def charged_seconds(needs: Iterable[str], costs: dict[str, float]) -> float:
    """What computing the features in `needs` beyond the shared embedding pass cost (`costs`: seconds per
    feature, e.g. the probe's for probe_loss, the extra pass's for loss_alone), prerequisites included.
    The whole cost is charged to every method that reads them (one that runs alone pays all of it), so
    report times compare what each method would cost a user."""
    needs = set(needs)
    charged = needs.union(*(PREREQUISITES.get(name, ()) for name in needs))
    return sum(costs.get(name, 0.0) for name in sorted(charged))
