"""LoRA fine-tuning of the target model on one subset: plain torch + peft, no Ray inside.

The loss is on response tokens only (prompt tokens are masked with -100), with the same prompt
template the evaluation uses. On GPUs the micro-batch adapts: `auto_batch_size` probes the largest
micro-batch that fits (up to the effective batch), and an out-of-memory step halves it and retries
with more gradient accumulation, so the effective batch — and the experiment — stays the same.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from distill.config.schema import TrainConfig
from distill.model import checkpoint
from distill.model.checkpoint import TrainState
from distill.model.prompt import PromptFormat, pad

log = logging.getLogger(__name__)

IGNORE = -100
StepHook = Callable[[int, int, float, Callable[[], TrainState]], None]  # (step, steps, loss, snapshot) after each step


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
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules),
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft reads transformers' deprecated is_gradient_checkpointing: not ours to fix
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return get_peft_model(model, lora)


def encode_examples(fmt: PromptFormat, turns: list, responses: list[str]) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) per example (`turns`: each example's prompt turns, see PromptFormat.encode); labels
    are -100 on the prompt."""
    out = []
    for prompt, response in zip(turns, responses):
        enc = fmt.encode(prompt, response)
        out.append((enc.prompt + enc.target, [IGNORE] * len(enc.prompt) + enc.target))
    return out


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int, device) -> dict[str, torch.Tensor]:
    ids, mask = pad([x for x, _ in examples], pad_id)
    labels, _ = pad([y for _, y in examples], IGNORE)
    return {
        "input_ids": torch.tensor(ids, device=device),
        "labels": torch.tensor(labels, device=device),
        "attention_mask": torch.tensor(mask, device=device),
    }


def finetune(
    model,
    tokenizer,
    fmt: PromptFormat,
    turns: list,
    responses: list[str],
    cfg: TrainConfig,
    seed: int,
    device: str,
    state: TrainState | None = None,
    on_step: StepHook | None = None,
) -> TrainStats:
    """Train LoRA adapters in place on `model` (already wrapped by `add_lora`).

    `state` (a checkpoint) continues a fine-tune after its `state.step`: same adapter, optimizer, scheduler,
    RNGs and data-stream position, so the remaining steps are the ones an uninterrupted run makes.
    `on_step(step, steps, loss, snapshot)` is told of each optimizer step, so a caller can show progress and
    checkpoint (`snapshot()` captures the state) without this module knowing how.
    """
    seed_everything(seed)
    start = time.perf_counter()
    data = encode_examples(fmt, turns, responses)
    effective = min(cfg.batch_size * cfg.grad_accum, len(data))  # a step never holds more than the subset
    steps = math.ceil(len(data) * cfg.epochs / effective)
    if cfg.max_steps:
        steps = min(steps, cfg.max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * steps), max(steps, 1))
    done, tokens, loss, micro, before = 0, 0, float("nan"), cfg.batch_size, 0.0
    if state is not None:
        checkpoint.restore(state, model, optimizer, scheduler)
        done, tokens, loss, micro, before = state.step, state.tokens, state.loss, state.micro, state.seconds
    elif cfg.auto_batch_size and device == "cuda":
        micro = largest_micro_batch(model, data, effective, tokenizer.pad_token_id, device)
    indices = _shuffled_stream(len(data), seed, start=done * effective)
    model.train()
    for step in range(done + 1, steps + 1):
        batch = [data[next(indices)] for _ in range(effective)]
        loss, micro = _step_with_backoff(model, batch, micro, tokenizer.pad_token_id, device)
        tokens += sum(len(ids) for ids, _ in batch)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if on_step is not None:
            seconds = before + time.perf_counter() - start
            on_step(
                step,
                steps,
                loss,
                functools.partial(
                    checkpoint.capture,
                    model,
                    optimizer,
                    scheduler,
                    step=step,
                    tokens=tokens,
                    loss=loss,
                    micro=micro,
                    seconds=seconds,
                ),
            )
    model.eval()
    return TrainStats(steps, len(data), tokens, loss, before + time.perf_counter() - start, micro)


def _shuffled_stream(n: int, seed: int, start: int = 0):
    """Example indices, a fresh permutation each epoch: every example is seen once per epoch.

    A pure function of (n, seed): from position `start` it yields what the stream from 0 yields there,
    which is how a resumed fine-tune gets the batches the interrupted one had not reached.
    """
    rng = np.random.default_rng(seed)
    epochs, offset = divmod(start, n)
    for _ in range(epochs):
        rng.permutation(n)
    yield from rng.permutation(n).tolist()[offset:]
    while True:
        yield from rng.permutation(n).tolist()


def response_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The causal-LM loss of `model(**batch).loss`, computing logits only where a label is set.

    Why: with a 49k vocabulary the LM head over every prompt position is most of the activation
    memory (and a fifth of the FLOPs) of a step, yet only response positions carry a label. So the
    base model gives hidden states, the positions whose next-token label is not -100 are gathered,
    and the LM head + cross-entropy run on those alone: the same mean over the same tokens.
    """
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = lm.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE
    logits = lm.get_output_embeddings()(hidden[:, :-1][keep]).float()
    return torch.nn.functional.cross_entropy(logits, labels[keep])


def _accumulate(model, batch, micro: int, pad_id: int, device: str) -> float:
    """Forward/backward `batch` in length-grouped chunks of `micro`; returns the loss of the whole batch.

    Chunks hold examples of similar length (less padding) and each is weighted by its share of the
    batch's labelled tokens, so the gradient is the one of a single pass over the whole batch.
    """
    chunks = [collate(c, pad_id, device) for c in _length_grouped(batch, micro)]
    labelled = [int((c["labels"][:, 1:] != IGNORE).sum()) for c in chunks]
    total = 0.0
    for chunk, n in zip(chunks, labelled):
        loss = response_loss(model, chunk) * (n / sum(labelled))
        loss.backward()
        total += loss.item()
    return total


def _length_grouped(batch, micro: int):
    """`batch` sorted by length, in chunks of `micro` examples."""
    ordered = sorted(batch, key=lambda ex: len(ex[0]))
    return [ordered[i : i + micro] for i in range(0, len(ordered), micro)]


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
            log.warning("out of memory: retrying the step with micro-batch %d", micro)


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
