"""One trial end to end on the tiny model: metrics contract, predictions file, caching, keys."""

from __future__ import annotations

import dataclasses
import json

import pytest

from distill.config.load import make_config
from distill.config.schema import AUTOCAST_BF16, DataConfig, ReportConfig, ResourcesConfig
from distill.config.sections import TRIAL_SETTINGS, TrialSettings
from distill.data.load import load_splits
from distill.store.records import FULL, RANDOM, SCHEMA_VERSION, Resolved
from distill.store.storage import open_storage
from distill.trial.evaluate import resolve_scorer
from distill.trial.run import TrialSpec, cached_metrics, run_trial, trial_key, write_trial

CONTRACT = {
    "trial",
    "key",
    "method",
    "seed",
    "samples",
    "rouge1",
    "rouge2",
    "rougeL",
    "bertscore_f1",
    "n_eval",
    "n_empty",
    "bertscore_model",
    "select_seconds",
    "train_seconds",
    "eval_seconds",
    "time_s",
    "gpu_seconds",
    "peak_memory_mb",
    "train_tokens",
    "device",
    "heldout_loss",
    "heldout_loss_seconds",
    "train_responses_cut",
    "heldout_responses_cut",
}


@pytest.fixture(scope="module")
def setup(tiny_model):
    cfg = make_config(
        {
            "model": {"name": tiny_model, "dtype": "float32", "max_source_tokens": 48, "max_target_tokens": 8},
            "select": {"methods": ["random"], "fraction": 0.5},
            "train": {"epochs": 1, "batch_size": 2, "max_steps": 2, "lora_r": 2},
            "eval": {"max_new_tokens": 4, "batch_size": 2, "bertscore_model": "offline"},
        }
    )
    splits = load_splits(DataConfig(test_size=2, max_train=6))
    pool, test = splits.train.iloc[:4].reset_index(drop=True), splits.test
    resolved = Resolved(tiny_model, "hf", resolve_scorer(cfg.eval, hub_reachable=False)[0], test_model=True)
    return cfg, pool, test, resolved, splits.fingerprint


@pytest.fixture(scope="module")
def finished(setup, tiny_model, tmp_path_factory):
    cfg, pool, test, resolved, fingerprint = setup
    spec = TrialSpec("random-s0", "random", 0, (0, 2, 3), select_seconds=0.25)
    key = trial_key(spec, TrialSettings.of(cfg), resolved, fingerprint)
    out = tmp_path_factory.mktemp("out")
    record = run_trial(spec, TrialSettings.of(cfg), pool, test, resolved, key, "summarization")
    write_trial(open_storage(out), spec.name, record)
    return spec, key, out / "trials" / spec.name, record.metrics.to_dict()


def test_metrics_file_holds_the_contract(finished, setup):
    spec, key, trial_dir, metrics = finished
    _, _, test, resolved, _ = setup
    scorer = resolved.scorer
    stored = json.loads((trial_dir / "metrics.json").read_text())
    assert stored == json.loads(json.dumps(metrics))
    assert CONTRACT <= set(stored), CONTRACT - set(stored)
    assert stored["schema_version"] == SCHEMA_VERSION and stored["eval_engine"] == "hf"
    assert stored["trial"] == "random-s0" and stored["method"] == "random" and stored["seed"] == 0
    assert stored["key"] == key
    assert stored["samples"] == 3
    assert stored["n_eval"] == len(test) == 2
    assert 0 <= stored["n_empty"] <= 2
    assert stored["bertscore_model"] == scorer.label
    assert stored["device"] == "cpu" and stored["gpu_seconds"] == 0.0
    assert stored["select_seconds"] == 0.25
    assert stored["time_s"] == pytest.approx(
        stored["select_seconds"] + stored["train_seconds"] + stored["eval_seconds"]
    )
    assert stored["train_tokens"] > 0 and stored["peak_memory_mb"] > 0
    for metric in ("rouge1", "rouge2", "rougeL", "bertscore_f1"):
        assert 0.0 <= stored[metric] <= 1.0
    assert not (trial_dir / "metrics.json.tmp").exists()


def test_predictions_file_one_line_per_test_row_in_order(finished, setup):
    _, _, trial_dir, metrics = finished
    _, _, test, _, _ = setup
    lines = [json.loads(line) for line in (trial_dir / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == test["id"].tolist()
    assert [r["reference"] for r in lines] == test["response"].tolist()
    for row in lines:
        assert {"prediction", "rouge1", "rouge2", "rougeL", "bertscore_f1", "empty"} <= set(row)
        assert row["empty"] == (not row["prediction"].strip())
    assert sum(r["empty"] for r in lines) == metrics["n_empty"]
    assert sum(r["rougeL"] for r in lines) / len(lines) == pytest.approx(metrics["rougeL"])


def test_heldout_loss_per_example_is_the_fine_tuned_models_response_loss(finished, setup, tiny_model):
    """Each held-out reference response's mean token cross-entropy under the trained adapter, in the training
    prompt and truncation: what `model(ids, labels).loss` gives with the prompt masked, one example at a time."""
    import torch

    from distill.model.load import load_model, load_tokenizer
    from distill.model.prompt import PromptFormat
    from distill.model.train import add_lora, finetune, seed_everything

    spec, _, trial_dir, metrics = finished
    cfg, pool, test, _, _ = setup
    lines = [json.loads(line) for line in (trial_dir / "predictions.jsonl").read_text().splitlines()]
    assert sum(r["heldout_loss"] for r in lines) / len(lines) == pytest.approx(metrics["heldout_loss"])
    tokenizer = load_tokenizer(tiny_model)
    fmt = PromptFormat(tokenizer, cfg.prompt, "summarization", cfg.model.max_source_tokens, cfg.model.max_target_tokens)
    seed_everything(spec.seed)
    model = add_lora(load_model(tiny_model, cfg.model, "cpu"), cfg.train)
    subset = pool.iloc[list(spec.indices)]
    finetune(model, tokenizer, fmt, subset["turns"].tolist(), subset["response"].tolist(), cfg.train, spec.seed, "cpu")
    for row, turns, response in zip(lines, test["turns"], test["response"]):
        enc = fmt.encode(turns, response)
        with torch.no_grad():
            expected = model(
                input_ids=torch.tensor([enc.prompt + enc.target]),
                labels=torch.tensor([[-100] * len(enc.prompt) + enc.target]),
            ).loss.item()
        assert row["heldout_loss"] == pytest.approx(expected, abs=1e-4)
    # max_target_tokens=8 cuts most BillSum summaries: counted for the report, in training and held out
    cut = [fmt.encode(t, r).target_cut for t, r in zip(test["turns"], test["response"])]
    assert metrics["heldout_responses_cut"] == sum(cut) > 0
    assert metrics["train_responses_cut"] == sum(
        fmt.encode(t, r).target_cut for t, r in zip(subset["turns"], subset["response"])
    )


def test_loss_only_trial_skips_generation_and_keeps_the_same_loss(finished, setup, tiny_model):
    """eval.generate false: no generation, ROUGE or BERTScore; the held-out loss is the generating trial's."""
    spec, key, _, metrics = finished
    cfg, pool, test, resolved, _ = setup
    loss_only = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, generate=False))
    record = run_trial(spec, TrialSettings.of(loss_only), pool, test, resolved, key, "summarization")
    assert not {"rouge1", "rougeL", "bertscore_f1"} & set(record.metrics.to_dict())
    assert all(record.metrics.get(k) is None for k in ("n_empty", "generate_seconds", "eval_engine", "bertscore_model"))
    assert record.metrics.get("heldout_loss") == metrics["heldout_loss"] and record.metrics.get("n_eval") == len(test)
    assert [set(r) for r in record.predictions] == [{"id", "reference", "heldout_loss"}] * len(test)


def test_cached_metrics(finished, tmp_path):
    _, key, trial_dir, metrics = finished
    assert cached_metrics(trial_dir, key).key == key
    assert cached_metrics(trial_dir, key).scores["rougeL"] == metrics["rougeL"]
    assert cached_metrics(trial_dir, "0" * 16) is None
    assert cached_metrics(tmp_path / "never-ran", key) is None


def test_trial_key_depends_on_everything(setup):
    cfg, _, _, resolved, fingerprint = setup
    spec = TrialSpec("random-s0", "random", 0, (0, 2, 3), 0.25)
    base = trial_key(spec, TrialSettings.of(cfg), resolved, fingerprint)
    # timing and the display name do not change the numbers, so they do not change the key
    assert (
        trial_key(dataclasses.replace(spec, select_seconds=9.0), TrialSettings.of(cfg), resolved, fingerprint) == base
    )
    train = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, learning_rate=1e-3))
    evaluation = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, max_new_tokens=5))
    eval_batch = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, batch_size=3))
    loss_only = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, generate=False))
    model_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, max_source_tokens=49))
    variants = [
        trial_key(dataclasses.replace(spec, indices=(0, 2)), TrialSettings.of(cfg), resolved, fingerprint),
        trial_key(dataclasses.replace(spec, indices=(0, 1, 3)), TrialSettings.of(cfg), resolved, fingerprint),
        trial_key(dataclasses.replace(spec, seed=1), TrialSettings.of(cfg), resolved, fingerprint),
        trial_key(spec, TrialSettings.of(train), resolved, fingerprint),
        trial_key(spec, TrialSettings.of(evaluation), resolved, fingerprint),
        trial_key(spec, TrialSettings.of(eval_batch), resolved, fingerprint),
        trial_key(spec, TrialSettings.of(loss_only), resolved, fingerprint),
        trial_key(spec, TrialSettings.of(model_cfg), resolved, fingerprint),
        trial_key(
            spec,
            TrialSettings.of(cfg),
            dataclasses.replace(resolved, model_path=resolved.model_path + "-other"),
            fingerprint,
        ),
        trial_key(spec, TrialSettings.of(cfg), resolved, "f" * 16),
        trial_key(
            spec,
            TrialSettings.of(cfg),
            dataclasses.replace(resolved, scorer=dataclasses.replace(resolved.scorer, num_layers=5)),
            fingerprint,
        ),
        trial_key(
            spec, TrialSettings.of(cfg), dataclasses.replace(resolved, engine="vllm"), fingerprint
        ),  # the engine that generated
        trial_key(
            spec, TrialSettings.of(cfg), dataclasses.replace(resolved, precision=AUTOCAST_BF16), fingerprint
        ),  # what `auto` became
    ]
    assert len({base, *variants}) == len(variants) + 1


def _other(value):
    """A different value of the same kind (None: any set value)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    return f"{value}-other" if isinstance(value, str) else 1


SPECS = [
    TrialSpec(f"{m}-s{s}", m, s, idx, 0.1)
    for m, idx in ((RANDOM, (0, 2)), ("clustering", (1, 3)), (FULL, (0, 1, 2, 3)))
    for s in (0, 1)
]


@pytest.mark.parametrize("section", ["report", "resources"])
def test_no_report_or_resource_setting_changes_a_trial_key(setup, section):
    """Every key of the report and resources sections, one at a time: no trial is rerun."""
    cfg, _, _, resolved, fingerprint = setup
    fields = dataclasses.fields(ReportConfig if section == "report" else ResourcesConfig)
    assert fields and not any(s == section or s.startswith(section + ".") for s in TRIAL_SETTINGS)
    base = [trial_key(spec, TrialSettings.of(cfg), resolved, fingerprint) for spec in SPECS]
    for field in fields:
        changed = dataclasses.replace(
            getattr(cfg, section), **{field.name: _other(getattr(getattr(cfg, section), field.name))}
        )
        assert [
            trial_key(spec, TrialSettings.of(dataclasses.replace(cfg, **{section: changed})), resolved, fingerprint)
            for spec in SPECS
        ] == base, f"{section}.{field.name} changed a trial key"


def test_the_requested_engine_is_not_hashed_only_the_resolved_one(setup):
    cfg, _, _, resolved, fingerprint = setup
    requested = dataclasses.replace(
        cfg, eval=dataclasses.replace(cfg.eval, engine="auto" if cfg.eval.engine != "auto" else "hf")
    )
    assert [trial_key(s, TrialSettings.of(requested), resolved, fingerprint) for s in SPECS] == [
        trial_key(s, TrialSettings.of(cfg), resolved, fingerprint) for s in SPECS
    ]


def test_a_training_setting_changes_every_trial_key(setup):
    cfg, _, _, resolved, fingerprint = setup
    lr = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, learning_rate=cfg.train.learning_rate * 2))
    before = [trial_key(spec, TrialSettings.of(cfg), resolved, fingerprint) for spec in SPECS]
    after = [trial_key(spec, TrialSettings.of(lr), resolved, fingerprint) for spec in SPECS]
    assert len(set(before)) == len(SPECS) and not set(before) & set(after) and len(set(after)) == len(SPECS)


def test_a_bf16_autocast_trial_keeps_lora_in_fp32_and_records_its_precision(setup, finished, monkeypatch):
    """The precision resolved for CPU trials is the one a trial runs in: bf16 matmuls under autocast, LoRA
    weights and AdamW state in fp32 (pure bf16 weights round small LoRA updates away), and its metrics say so."""
    import torch

    from distill.model import train

    cfg, pool, test, resolved, fingerprint = setup
    spec, _, _, fp32 = finished
    seen = {}

    def spy(model, *args, **kwargs):
        lora = [p for p in model.parameters() if p.requires_grad]
        seen["lora"] = {p.dtype for p in lora}
        seen["autocast"] = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        return finetune(model, *args, **kwargs)

    finetune = train.finetune
    monkeypatch.setattr("distill.trial.run.finetune", spy)
    bf16 = dataclasses.replace(resolved, precision=AUTOCAST_BF16)
    record = run_trial(
        spec,
        TrialSettings.of(cfg),
        pool,
        test,
        bf16,
        trial_key(spec, TrialSettings.of(cfg), bf16, fingerprint),
        "summarization",
    )
    metrics = record.metrics.to_dict()
    assert seen == {"lora": {torch.float32}, "autocast": True}
    assert metrics["precision"] == AUTOCAST_BF16 and fp32["precision"] == "float32"
    assert metrics["heldout_loss"] == pytest.approx(fp32["heldout_loss"], rel=0.05)  # the same model, bf16 rounding
    assert metrics["heldout_loss"] != fp32["heldout_loss"]  # but really computed in bf16


def test_a_trial_encodes_each_held_out_prompt_once(setup, finished, monkeypatch):
    """The held-out-loss pass and generation share one encoding of each prompt (tokenizing it is the costly part),
    and sharing it changes no number."""
    from distill.model.prompt import PromptFormat

    cfg, pool, test, resolved, fingerprint = setup
    spec, key, trial_dir, metrics = finished
    encode, calls = PromptFormat.encode, []

    def counted(self, turns, response=None, keep_content=True):
        calls.append(turns)
        return encode(self, turns, response, keep_content)

    monkeypatch.setattr(PromptFormat, "encode", counted)
    again = run_trial(spec, TrialSettings.of(cfg), pool, test, resolved, key, "summarization")
    assert sorted(c for c in calls if c in set(test["turns"])) == sorted(test["turns"])
    assert [p["prediction"] for p in again.predictions] == [
        json.loads(line)["prediction"] for line in (trial_dir / "predictions.jsonl").read_text().splitlines()
    ]


def test_rerun_with_same_seed_is_identical(finished, setup, tmp_path):
    import torch

    spec, key, trial_dir, metrics = finished
    cfg, pool, test, resolved, _ = setup
    torch.rand(100)  # consume global RNG state: the trial must seed everything it uses itself
    again = run_trial(spec, TrialSettings.of(cfg), pool, test, resolved, key, "summarization")
    write_trial(open_storage(tmp_path), spec.name, again)
    assert again.metrics.get("final_train_loss") == metrics["final_train_loss"]
    assert again.metrics.get("train_tokens") == metrics["train_tokens"]
    assert (tmp_path / "trials" / spec.name / "predictions.jsonl").read_text() == (
        trial_dir / "predictions.jsonl"
    ).read_text()


def test_a_trial_records_the_cpu_seconds_of_its_own_training_and_evaluation(finished):
    """The report's cost of a CPU trial: CPU seconds of its process (waiting for a free CPU adds none)."""
    _, _, trial_dir, _ = finished
    stored = json.loads((trial_dir / "metrics.json").read_text())
    assert stored["train_cpu_seconds"] > 0 and stored["eval_cpu_seconds"] > 0
