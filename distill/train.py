"""LoRA fine-tuning of the target model on one subset: plain torch + peft, no Ray inside.

The loss is on summary tokens only (prompt tokens are masked with -100), with the same prompt
template the evaluation uses. On GPUs the micro-batch adapts: `auto_batch_size` probes the largest
micro-batch that fits (up to the effective batch), and an out-of-memory step halves it and retries
with more gradient accumulation, so the effective batch — and the experiment — stays the same.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from distill.config import TrainConfig
from distill.prompt import PromptFormat, pad

IGNORE = -100


@dataclass
class TrainStats:
    steps: int
    examples: int
    train_tokens: int
    final_loss: float
    seconds: float
    micro_batch: int


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def add_lora(model, cfg: TrainConfig, quantized: bool = False):
    """Wrap the model with LoRA adapters (k-bit preparation first for 8-bit models)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def encode_examples(fmt: PromptFormat, texts: list[str], summaries: list[str]) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) per example; labels are -100 on the prompt."""
    out = []
    for text, summary in zip(texts, summaries):
        enc = fmt.encode(text, summary)
        out.append((enc.prompt + enc.target, [IGNORE] * len(enc.prompt) + enc.target))
    return out


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int, device) -> dict[str, torch.Tensor]:
    ids, mask = pad([x for x, _ in examples], pad_id)
    labels, _ = pad([y for _, y in examples], IGNORE)
    return {"input_ids": torch.tensor(ids, device=device), "labels": torch.tensor(labels, device=device),
            "attention_mask": torch.tensor(mask, device=device)}


def finetune(model, tokenizer, fmt: PromptFormat, texts: list[str], summaries: list[str], cfg: TrainConfig,
             seed: int, device: str, on_step: Callable[[int, int], None] | None = None) -> TrainStats:
    """Train LoRA adapters in place on `model` (already wrapped by `add_lora`).

    `on_step(step, steps)` runs after every optimizer step (the probe records losses there)."""
    seed_everything(seed)
    start = time.perf_counter()
    data = encode_examples(fmt, texts, summaries)
    effective = min(cfg.batch_size * cfg.grad_accum, len(data))  # a step never holds more than the subset
    steps = math.ceil(len(data) * cfg.epochs / effective)
    if cfg.max_steps:
        steps = min(steps, cfg.max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * steps), max(steps, 1))
    micro = cfg.batch_size
    if cfg.auto_batch_size and device == "cuda":
        micro = largest_micro_batch(model, data, effective, tokenizer.pad_token_id, device)
    indices = _shuffled_stream(len(data), seed)
    tokens, loss = 0, float("nan")
    model.train()
    for step in range(steps):
        batch = [data[next(indices)] for _ in range(min(effective, len(data)))]
        loss, micro = _step_with_backoff(model, batch, micro, tokenizer.pad_token_id, device)
        tokens += sum(len(ids) for ids, _ in batch)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if on_step:
            on_step(step + 1, steps)
    model.eval()
    return TrainStats(steps, len(data), tokens, loss, time.perf_counter() - start, micro)


def _shuffled_stream(n: int, seed: int):
    """Example indices, a fresh permutation each epoch: every example is seen once per epoch."""
    rng = np.random.default_rng(seed)
    while True:
        yield from rng.permutation(n).tolist()


def _accumulate(model, batch, micro: int, pad_id: int, device: str) -> float:
    """Forward/backward `batch` in chunks of `micro`; returns the mean loss."""
    total = 0.0
    for i in range(0, len(batch), micro):
        chunk = batch[i:i + micro]
        loss = model(**collate(chunk, pad_id, device)).loss * (len(chunk) / len(batch))
        loss.backward()
        total += loss.item()
    return total


def _step_with_backoff(model, batch, micro: int, pad_id: int, device: str) -> tuple[float, int]:
    """One optimizer step's gradients; on CUDA OOM halve the micro-batch and retry the same step."""
    while True:
        try:
            return _accumulate(model, batch, micro, pad_id, device), micro
        except torch.cuda.OutOfMemoryError:
            if micro == 1:
                raise
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            micro = max(1, micro // 2)
            print(f"[train] out of memory: retrying the step with micro-batch {micro}", flush=True)


def largest_micro_batch(model, data, effective: int, pad_id: int, device: str) -> int:
    """Double the micro-batch on the longest examples until OOM or the effective batch is reached."""
    longest = sorted(data, key=lambda d: len(d[0]), reverse=True)
    micro, fits = 1, 1
    while micro <= min(effective, len(longest)):
        try:
            _accumulate(model, longest[:micro], micro, pad_id, device)
            fits = micro
            micro *= 2
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            break
        finally:
            model.zero_grad(set_to_none=True)
    return fits
