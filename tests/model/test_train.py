"""LoRA fine-tuning: masked labels, step count, learning, determinism, trainable parameters."""

from __future__ import annotations

import pytest
import torch

from distill.config.schema import ModelConfig, PromptConfig, TrainConfig
from distill.data.formats import user_turn
from distill.model.load import load_model, load_tokenizer
from distill.model.prompt import PromptFormat
from distill.model.train import IGNORE, add_lora, collate, encode_examples, finetune, seed_everything

TEXTS = [
    "The Secretary of Energy shall carry out a program to support research on grid storage.",
    "Amends the Internal Revenue Code to extend the credit for electric vehicles through 2030.",
    "Designates the facility of the Postal Service at 100 Main Street as the Jane Doe Post Office.",
    "Requires the Administrator to issue rules on lead in drinking water within one year.",
    "Authorizes appropriations for rural broadband grants for fiscal years 2025 through 2029.",
]
SUMMARIES = [
    "Creates a grid storage program.",
    "Extends the EV credit.",
    "Names a post office.",
    "Requires lead rules.",
    "Funds rural broadband.",
]
PROMPTS = [user_turn(text) for text in TEXTS]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return load_tokenizer(tiny_model)


@pytest.fixture(scope="module")
def fmt(tokenizer):
    return PromptFormat(tokenizer, PromptConfig(), "summarization", max_source_tokens=16, max_target_tokens=8)


def fresh(tiny_model, cfg: TrainConfig, seed: int = 0):
    seed_everything(seed)
    return add_lora(load_model(tiny_model, ModelConfig(name=tiny_model, dtype="float32"), "cpu"), cfg)


def response_loss(model, tokenizer, fmt) -> float:
    model.eval()
    with torch.no_grad():
        losses = [
            model(**collate([ex], tokenizer.pad_token_id, "cpu")).loss.item()
            for ex in encode_examples(fmt, PROMPTS, SUMMARIES)
        ]
    return sum(losses) / len(losses)


def lora_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" in k}


def test_labels_masked_on_prompt(fmt, tokenizer):
    examples = encode_examples(fmt, PROMPTS[:2], SUMMARIES[:2])
    for (ids, labels), prompt, summary in zip(examples, PROMPTS, SUMMARIES):
        enc = fmt.encode(prompt, summary)
        assert ids == enc.prompt + enc.target
        assert len(labels) == len(ids)
        assert labels[: len(enc.prompt)] == [IGNORE] * len(enc.prompt)
        assert labels[len(enc.prompt) :] == enc.target
        assert labels[-1] == tokenizer.eos_token_id


def test_collate_pads_right_and_masks(fmt, tokenizer):
    examples = encode_examples(fmt, PROMPTS[:2], ["x", SUMMARIES[1] * 3])
    batch = collate(examples, tokenizer.pad_token_id, "cpu")
    short, long_ = sorted(range(2), key=lambda i: len(examples[i][0]))
    n = len(examples[short][0])
    width = batch["input_ids"].shape[1]
    assert width == len(examples[long_][0])
    assert batch["attention_mask"][short].tolist() == [1] * n + [0] * (width - n)
    assert batch["labels"][short, n:].eq(IGNORE).all()
    assert batch["input_ids"][short, n:].eq(tokenizer.pad_token_id).all()


def test_only_lora_parameters_are_trainable(tiny_model):
    model = fresh(tiny_model, TrainConfig(lora_r=4))
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable
    assert all("lora_" in name for name in trainable)
    for module in ("q_proj", "k_proj", "v_proj", "o_proj"):
        assert any(module in name for name in trainable)
    assert not any("mlp" in name for name in trainable)


@pytest.mark.parametrize(
    "n,epochs,batch,accum,max_steps,expected",
    [
        (5, 1.0, 2, 1, None, 3),
        (5, 2.0, 2, 1, None, 5),
        (5, 1.0, 2, 2, None, 2),
        (5, 3.0, 1, 1, 4, 4),
        (4, 0.5, 1, 1, None, 2),
        (3, 1.0, 8, 1, None, 1),
        (3, 3.0, 8, 1, None, 3),  # subset smaller than the batch: one full pass per step, still 3 epochs
        (2, 2.0, 4, 2, None, 2),
    ],
)
def test_step_count(tiny_model, tokenizer, fmt, monkeypatch, n, epochs, batch, accum, max_steps, expected):
    """steps = ceil(n * epochs / min(batch * grad_accum, n)), capped by max_steps (gradients stubbed: only counting)."""
    import distill.model.train as train

    seen = []

    def counting_step(model, examples, micro, pad_id, device):
        seen.append(len(examples))
        return 0.5, micro

    monkeypatch.setattr(train, "_step_with_backoff", counting_step)
    cfg = TrainConfig(epochs=epochs, batch_size=batch, grad_accum=accum, max_steps=max_steps, lora_r=2)
    model = fresh(tiny_model, cfg)
    stats = finetune(model, tokenizer, fmt, PROMPTS[:n], SUMMARIES[:n], cfg, seed=0, device="cpu")
    assert stats.steps == expected == len(seen)
    assert sum(seen) >= n * epochs or max_steps  # every epoch is delivered unless max_steps cuts it
    assert seen == [min(batch * accum, n)] * expected  # every step holds one effective batch
    assert stats.examples == n
    assert stats.micro_batch == batch
    assert stats.final_loss == 0.5


def test_every_optimizer_step_is_reported(tiny_model, tokenizer, fmt, monkeypatch):
    """on_step feeds the console's trial table (through tune.report) and checkpoints: (step, steps, loss,
    snapshot) after each step."""
    import distill.model.train as train

    losses = iter([3.0, 2.5, 2.25])
    monkeypatch.setattr(train, "_step_with_backoff", lambda model, ex, micro, pad, dev: (next(losses), micro))
    cfg = TrainConfig(epochs=3, batch_size=5, lora_r=2)
    heard = []
    stats = finetune(
        fresh(tiny_model, cfg),
        tokenizer,
        fmt,
        PROMPTS,
        SUMMARIES,
        cfg,
        seed=0,
        device="cpu",
        on_step=lambda step, steps, loss, snapshot: heard.append((step, steps, loss, callable(snapshot))),
    )
    assert heard == [(1, 3, 3.0, True), (2, 3, 2.5, True), (3, 3, 2.25, True)] and stats.final_loss == 2.25


def test_every_example_seen_once_per_epoch(tiny_model, tokenizer, fmt, monkeypatch):
    import distill.model.train as train

    seen = []
    monkeypatch.setattr(
        train, "_step_with_backoff", lambda model, ex, micro, pad, dev: (seen.extend(ex), (0.0, micro))[1]
    )
    cfg = TrainConfig(epochs=2, batch_size=5, lora_r=2)
    finetune(fresh(tiny_model, cfg), tokenizer, fmt, PROMPTS, SUMMARIES, cfg, seed=1, device="cpu")
    examples = encode_examples(fmt, PROMPTS, SUMMARIES)
    for epoch in (seen[:5], seen[5:]):
        assert sorted(map(str, epoch)) == sorted(map(str, examples))


def test_finetuning_lowers_training_loss(tiny_model, tokenizer, fmt):
    # the random tiny model's logits are bounded (tied 0.02-scale embeddings after RMSNorm), so its loss
    # starts at ~ln(vocab) = 10.8 and can only move by tenths of a nat: 0.05 is a clear, seeded margin
    cfg = TrainConfig(
        learning_rate=2e-2,
        epochs=3,
        batch_size=5,
        lora_r=8,
        lora_alpha=128,
        lora_dropout=0.0,
        warmup_ratio=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    model = fresh(tiny_model, cfg)
    before = response_loss(model, tokenizer, fmt)
    stats = finetune(model, tokenizer, fmt, PROMPTS, SUMMARIES, cfg, seed=0, device="cpu")
    after = response_loss(model, tokenizer, fmt)
    assert stats.steps == 3
    total = sum(len(ids) for ids, _ in encode_examples(fmt, PROMPTS, SUMMARIES))
    assert stats.train_tokens == 3 * total  # batch == pool: every step sees every example once
    assert after < before - 0.05, (before, after)
    assert not model.training  # left in eval mode


def test_finetune_is_deterministic_for_a_seed(tiny_model, tokenizer, fmt):
    cfg = TrainConfig(learning_rate=1e-2, epochs=1, batch_size=2, lora_r=4)
    runs = []
    for _ in range(2):
        model = fresh(tiny_model, cfg, seed=3)
        stats = finetune(model, tokenizer, fmt, PROMPTS[:3], SUMMARIES[:3], cfg, seed=3, device="cpu")
        runs.append((lora_state(model), stats.final_loss))
    (a, loss_a), (b, loss_b) = runs
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert loss_a == loss_b
    # a different training seed gives different weights (different batch order)
    model = fresh(tiny_model, cfg, seed=3)
    finetune(model, tokenizer, fmt, PROMPTS[:3], SUMMARIES[:3], cfg, seed=4, device="cpu")
    c = lora_state(model)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_finetune_trains_lora_b_from_zero(tiny_model, tokenizer, fmt):
    cfg = TrainConfig(learning_rate=1e-2, max_steps=1, batch_size=2, lora_r=4)
    model = fresh(tiny_model, cfg)
    before = lora_state(model)
    assert all(v.abs().sum() == 0 for k, v in before.items() if "lora_B" in k)
    base_before = {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" not in k}
    finetune(model, tokenizer, fmt, PROMPTS, SUMMARIES, cfg, seed=0, device="cpu")
    after = lora_state(model)
    assert any(after[k].abs().sum() > 0 for k in after if "lora_B" in k)
    for k, v in model.named_parameters():
        if "lora_" not in k:
            assert torch.equal(v, base_before[k]), k  # the base model is frozen


def _lora_grads(model) -> dict[str, torch.Tensor]:
    return {k: v.grad.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def test_response_loss_and_gradients_equal_the_full_lm_loss(tiny_model, tokenizer, fmt):
    """The lean loss (LM head on labelled positions only) is model(**batch).loss, gradients included."""
    from distill.model.train import response_loss

    cfg = TrainConfig(lora_r=4, lora_dropout=0.0)
    model = fresh(tiny_model, cfg)
    for name, param in model.named_parameters():  # non-zero B, so the LoRA path carries gradient to A too
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    batch = collate(encode_examples(fmt, PROMPTS, SUMMARIES), tokenizer.pad_token_id, "cpu")
    assert (batch["attention_mask"] == 0).any()  # right padding is exercised
    full = model(**batch).loss
    full.backward()
    expected = _lora_grads(model)
    model.zero_grad(set_to_none=True)
    lean = response_loss(model, batch)
    lean.backward()
    assert abs(lean.item() - full.item()) < 1e-5
    got = _lora_grads(model)
    assert got.keys() == expected.keys() and got
    for key in got:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-7)


def test_micro_batches_give_the_gradient_of_the_whole_batch(tiny_model, tokenizer, fmt):
    """Length-grouped chunks weighted by labelled tokens: micro-batch 1 == one pass over the batch."""
    from distill.model.train import _accumulate

    model = fresh(tiny_model, TrainConfig(lora_r=4, lora_dropout=0.0))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    batch = encode_examples(fmt, PROMPTS, SUMMARIES)
    whole = _accumulate(model, batch, len(batch), tokenizer.pad_token_id, "cpu")
    expected = _lora_grads(model)
    model.zero_grad(set_to_none=True)
    split = _accumulate(model, batch, 1, tokenizer.pad_token_id, "cpu")
    assert abs(whole - split) < 1e-5
    assert abs(whole - model(**collate(batch, tokenizer.pad_token_id, "cpu")).loss.item()) < 1e-5
    got = _lora_grads(model)
    for key in got:  # float sums in another order: equal to 1e-4 of the gradient's scale
        assert (got[key] - expected[key]).abs().max() <= 1e-4 * expected[key].abs().max(), key
