"""Target-model features: pooled hidden states of each example and its response loss.

One teacher-forced forward pass over `prompt + response` gives: the user content's hidden states
(pooled → `embedding`; the template around it is left out), the position-weighted mean of every token's final
hidden state (→ `embedding_wmean`, RDS+'s representation) and the response tokens' cross-entropy (→ `loss`, the
training-dynamics signal of `loss_based` and `d2_pruning`), and whether the response was cut at
model.max_target_tokens (→ `response_cut`). When a selected method needs it (IFD), one more batched pass over the
responses in the template without the user content gives `loss_alone`, with the seconds it took (the method's
extra cost). `EmbedActor` is the callable class Ray Data runs as an actor pool (runtime/features.py); it holds no
Ray code, so tests call it directly. `response_losses` is the batched loss pass that the probe and the trials'
held-out loss share.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import torch

from distill import faults
from distill.config.schema import ModelConfig, PromptConfig
from distill.model.load import device_name, load_model, load_tokenizer
from distill.model.prompt import Encoded, PromptFormat, pad
from distill.store.artifacts import content_hash

EMBEDDING, LOSS, EMBEDDING_WMEAN = "embedding", "loss", "embedding_wmean"  # columns of every embedding batch
RESPONSE_CUT = "response_cut"  # 1 where the response is longer than model.max_target_tokens
LOSS_ALONE = "loss_alone"  # the response's loss without the user content (only when asked for)
SECONDS = "seconds_"  # column prefix: each row's share of the wall seconds of the pass that computed a column


def output_columns(loss_alone: bool = False) -> tuple[str, ...]:
    """The feature columns EmbedActor writes, with the seconds of the pass (with `loss_alone`: also IFD's extra
    pass and its seconds). The seconds travel with the cache, so a run that reuses it still reports what
    computing it cost."""
    shared = (EMBEDDING, LOSS, EMBEDDING_WMEAN, RESPONSE_CUT, SECONDS + EMBEDDING)
    return shared + ((LOSS_ALONE, SECONDS + LOSS_ALONE) if loss_alone else ())


def cache_key(
    model_path: str,
    data_fingerprint: str,
    model_cfg: ModelConfig,
    prompt_cfg: PromptConfig,
    pooling: str,
    columns: tuple[str, ...] = output_columns(),
) -> str:
    """Content hash of everything the features depend on (the model and prompt sections whole: any of their keys
    changes what the model sees or computes), and of which columns the cache holds."""
    settings = {
        "model_path": model_path,
        "data": data_fingerprint,
        "model": dataclasses.asdict(model_cfg),
        "prompt": dataclasses.asdict(prompt_cfg),
        "pooling": pooling,
        "columns": sorted(columns),
    }
    return content_hash(settings)


def teacher_forced(model, encoded: list, pad_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One right-padded forward pass over `prompt + response` of each example: (last hidden states, input ids)."""
    padded, mask = pad([e.prompt + e.target for e in encoded], pad_id)
    input_ids = torch.tensor(padded, device=device)
    mask = torch.tensor(mask, device=device)
    return model.get_decoder()(input_ids=input_ids, attention_mask=mask).last_hidden_state, input_ids


def response_loss(model, hidden: torch.Tensor, input_ids: torch.Tensor, enc) -> float:
    """Mean cross-entropy of one example's response tokens given its prompt (logits only where needed).

    `hidden` is the example's last hidden states from `model.get_decoder()`; shared by the embedding
    pass (step-0 loss), the probe (loss at every checkpoint) and the trials (held-out loss), so all
    measure the same thing."""
    first = len(enc.prompt)
    positions = torch.arange(first - 1, first + len(enc.target) - 1, device=hidden.device)
    logits = model.get_output_embeddings()(hidden[positions]).float()
    return torch.nn.functional.cross_entropy(logits, input_ids[positions + 1]).item()


@torch.no_grad()
def response_losses(model, encoded: list[Encoded], pad_id: int, batch_size: int, device: str) -> np.ndarray:
    """Response loss of every example under the model as it is now (eval mode: no dropout),
    in length-sorted batches (less padding); the model's train/eval mode is restored after."""
    was_training = model.training
    model.eval()
    order = np.argsort([-len(e.prompt) - len(e.target) for e in encoded], kind="stable")
    losses = np.empty(len(encoded), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        chunk = [encoded[i] for i in rows]
        hidden, input_ids = teacher_forced(model, chunk, pad_id, device)
        losses[rows] = [response_loss(model, hidden[j], input_ids[j], e) for j, e in enumerate(chunk)]
    model.train(was_training)
    return losses


def position_weighted_mean(hidden: torch.Tensor, length: int) -> torch.Tensor:
    """RDS+'s pooling (Ivison et al., 2025, after SGPT): the mean of the first `length` (real, not
    padding) hidden states with weights t / Σt, t = 1..length: in a causal model later tokens have
    seen more of the text, so they weigh more."""
    weights = torch.arange(1, length + 1, device=hidden.device, dtype=hidden.dtype)
    return (weights / weights.sum()) @ hidden[:length]


def per_row_seconds(start: float, rows: int) -> np.ndarray:
    """Each of a batch's `rows` rows' share of the wall seconds since `start` (summed over a column: the pass's)."""
    return np.full(rows, (time.perf_counter() - start) / rows, dtype=np.float32)


class EmbedActor:
    """Loads the target model once per actor; maps batches of rows to their feature columns."""

    def __init__(
        self,
        model_path: str,
        model_cfg: ModelConfig,
        prompt_cfg: PromptConfig,
        data_format: str,
        pooling: str = "mean",
        num_threads: int | None = None,
        loss_alone: bool = False,
    ):
        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = device_name()
        self.tokenizer = load_tokenizer(model_path)
        self.model = load_model(model_path, model_cfg, self.device).eval()
        self.format = PromptFormat(
            self.tokenizer, prompt_cfg, data_format, model_cfg.max_source_tokens, model_cfg.max_target_tokens
        )
        self.pooling = pooling
        self.loss_alone = loss_alone
        self.batches = 0  # batches this actor process has embedded (the fault-injection tests count them)

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.batches += 1
        faults.inject("embed_batch", self.batches, "embed")
        start = time.perf_counter()
        turns = [json.loads(t) for t in batch["turns"]]
        encoded = [self.format.encode(t, str(r)) for t, r in zip(turns, batch["response"])]
        hidden, input_ids = teacher_forced(self.model, encoded, self.tokenizer.pad_token_id, self.device)
        embeddings = [self._pool(hidden[i], e) for i, e in enumerate(encoded)]
        weighted = [position_weighted_mean(hidden[i], len(e.prompt) + len(e.target)) for i, e in enumerate(encoded)]
        losses = [response_loss(self.model, hidden[i], input_ids[i], e) for i, e in enumerate(encoded)]
        out = {
            "row": np.asarray(batch["row"]),
            EMBEDDING: torch.stack(embeddings).float().cpu().numpy(),
            LOSS: np.asarray(losses, dtype=np.float32),
            EMBEDDING_WMEAN: torch.stack(weighted).float().cpu().numpy(),
            RESPONSE_CUT: np.asarray([e.target_cut for e in encoded], dtype=np.float32),
        }
        out[SECONDS + EMBEDDING] = per_row_seconds(start, len(encoded))
        if self.loss_alone:
            out.update(self._loss_alone(turns, batch["response"]))
        return out

    def _loss_alone(self, turns: list, responses: np.ndarray) -> dict[str, np.ndarray]:
        """IFD's denominator: each response's loss in the same prompt template with the user content left
        out (one more batched pass, over short sequences), and each row's share of its wall seconds."""
        start = time.perf_counter()
        alone = [self.format.encode(t, str(r), keep_content=False) for t, r in zip(turns, responses)]
        hidden, input_ids = teacher_forced(self.model, alone, self.tokenizer.pad_token_id, self.device)
        losses = np.asarray(
            [response_loss(self.model, hidden[i], input_ids[i], e) for i, e in enumerate(alone)], dtype=np.float32
        )
        return {LOSS_ALONE: losses, SECONDS + LOSS_ALONE: per_row_seconds(start, len(alone))}

    def _pool(self, hidden: torch.Tensor, enc: Encoded) -> torch.Tensor:
        """Mean over the user content's positions (the last prompt token when there is none); `last`: the last
        prompt token, which has seen the whole prompt."""
        positions = enc.content_positions()
        if self.pooling == "last" or not positions:
            return hidden[len(enc.prompt) - 1]
        return hidden[positions].mean(dim=0)
