"""Target-model features: pooled hidden states of each document and its summary loss.

One teacher-forced forward pass over `prompt + summary` gives both: the document span's hidden
states (pooled → embedding) and the summary tokens' cross-entropy (→ `loss`, the training-dynamics
signal of `loss_based` and `d2_pruning`). `EmbedActor` is the callable class Ray Data runs as an
actor pool (pipeline.py); it holds no Ray code, so tests call it directly.
"""

from __future__ import annotations

import numpy as np
import torch

from distill import faults
from distill.config import ModelConfig, content_hash
from distill.models import device_name, load_model, load_tokenizer
from distill.prompt import PromptFormat, pad


def cache_key(model_path: str, data_fingerprint: str, model_cfg: ModelConfig, pooling: str) -> str:
    """Content hash of everything the features depend on."""
    settings = {"model": model_path, "data": data_fingerprint, "pooling": pooling,
                "src": model_cfg.max_source_tokens, "tgt": model_cfg.max_target_tokens, "dtype": model_cfg.dtype,
                "8bit": model_cfg.load_in_8bit}
    return content_hash(settings)


def teacher_forced(model, encoded: list, pad_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One right-padded forward pass over `prompt + summary` of each example: (last hidden states, input ids)."""
    padded, mask = pad([e.prompt + e.target for e in encoded], pad_id)
    input_ids = torch.tensor(padded, device=device)
    mask = torch.tensor(mask, device=device)
    return model.get_decoder()(input_ids=input_ids, attention_mask=mask).last_hidden_state, input_ids


def summary_loss(model, hidden: torch.Tensor, input_ids: torch.Tensor, enc) -> float:
    """Mean cross-entropy of one example's summary tokens given its prompt (logits only where needed).

    `hidden` is the example's last hidden states from `model.get_decoder()`; shared by the embedding
    pass (step-0 loss) and the probe (loss at every checkpoint), so both measure the same thing."""
    first = len(enc.prompt)
    positions = torch.arange(first - 1, first + len(enc.target) - 1, device=hidden.device)
    logits = model.get_output_embeddings()(hidden[positions]).float()
    return torch.nn.functional.cross_entropy(logits, input_ids[positions + 1]).item()


class EmbedActor:
    """Loads the target model once per actor; maps batches of rows to (embedding, loss)."""

    def __init__(self, model_path: str, model_cfg: ModelConfig, pooling: str = "mean", num_threads: int | None = None):
        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = device_name()
        self.tokenizer = load_tokenizer(model_path)
        self.model = load_model(model_path, model_cfg, self.device).eval()
        self.format = PromptFormat(self.tokenizer, model_cfg.max_source_tokens, model_cfg.max_target_tokens)
        self.pooling = pooling
        self.batches = 0  # batches this actor process has embedded (the fault-injection tests count them)

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.batches += 1
        faults.inject("embed_batch", self.batches, "embed")
        encoded = [self.format.encode(str(t), str(s)) for t, s in zip(batch["text"], batch["summary"])]
        hidden, input_ids = teacher_forced(self.model, encoded, self.tokenizer.pad_token_id, self.device)
        embeddings = [self._pool(hidden[i], e) for i, e in enumerate(encoded)]
        losses = [summary_loss(self.model, hidden[i], input_ids[i], e) for i, e in enumerate(encoded)]
        return {"row": np.asarray(batch["row"]), "embedding": torch.stack(embeddings).float().cpu().numpy(),
                "loss": np.asarray(losses, dtype=np.float32)}

    def _pool(self, hidden: torch.Tensor, enc) -> torch.Tensor:
        start, end = enc.doc_span
        if self.pooling == "last":
            return hidden[len(enc.prompt) - 1]
        return hidden[start:max(end, start + 1)].mean(dim=0)
