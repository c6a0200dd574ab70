"""Shared pieces of the scripts/bench_*.py benchmarks: the quick job's setup, peak memory, tables, JSON.

Every benchmark compares its arms side by side in ONE run on the same machine (the ratios are what
count on a shared box) and writes what it measured to docs/bench/<name>.json.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass
class QuickSetup:
    """What the default quick job trains and evaluates on: its config, data, model and prompt format."""

    cfg: object  # ExperimentConfig
    pool: object  # pandas DataFrame: the training pool
    test: object  # pandas DataFrame: the held-out set
    model_path: str
    tokenizer: object
    fmt: object  # PromptFormat
    data_format: str  # the data's layout (Splits.format): what PromptFormat and EmbedActor are built for

    def subset(self):
        """The first k pool rows, k = the quick job's budget (10% of the pool)."""
        k = max(1, round(self.cfg.select.fraction * len(self.pool)))
        return self.pool.iloc[:k]


def quick_setup(model: str | None = None, overrides: dict | None = None) -> QuickSetup:
    """The quick job (jobs/quick.yaml), with `overrides` (dotted keys), its data and the real target model,
    resolved offline."""
    from distill.config.load import make_config
    from distill.data.load import load_splits
    from distill.model.load import load_tokenizer, resolve_model
    from distill.model.prompt import PromptFormat

    cfg = make_config("quick", {**({"model.name": model} if model else {}), **(overrides or {})} or None)
    splits = load_splits(cfg.data)
    model_path = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(model_path)
    fmt = PromptFormat(tokenizer, cfg.prompt, splits.format, cfg.model.max_source_tokens, cfg.model.max_target_tokens)
    return QuickSetup(cfg, splits.train, splits.test, model_path, tokenizer, fmt, splits.format)


def quick_arguments(ap, default_json: Path) -> None:
    """The arguments of a benchmark run on the quick job's held-out bills with its LoRA-wrapped model."""
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a quick-job trial has 1)")
    ap.add_argument("--quick", action="store_true", help="4 bills instead of the 10 held out")
    ap.add_argument("--model", help="another model than the quick job's (e.g. a tiny one for a smoke test)")
    ap.add_argument("--json", type=Path, default=default_json)


def lora_model(setup: QuickSetup, device: str = "cpu"):
    """The target model with the quick job's LoRA adapters attached, seeded, as a trial holds it."""
    from distill.model.load import load_model
    from distill.model.train import add_lora, seed_everything

    seed_everything(0)
    return add_lora(load_model(setup.model_path, setup.cfg.model, device), setup.cfg.train).eval()


def finetune_subset(model, setup: QuickSetup, subset, train_cfg, device: str = "cpu"):
    """distill's own training loop (model/train.finetune) on `subset`'s rows, seed 0, as a trial runs it."""
    from distill.model.train import finetune

    turns, responses = subset["turns"].tolist(), subset["response"].tolist()
    return finetune(model, setup.tokenizer, setup.fmt, turns, responses, train_cfg, seed=0, device=device)


def reset_peak_rss() -> float:
    """Reset this process's peak resident memory (Linux clear_refs 5); returns the current RSS in MB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Peak resident memory since the last reset_peak_rss(), in MB."""
    return _status_mb("VmHWM")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def machine() -> dict:
    import torch

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average_1_5_15min": os.getloadavg(),
    }  # the box is shared: how busy it was at the end


def print_table(rows: list[dict], columns: list[str]) -> None:
    """A Markdown table of `rows` (missing cells blank)."""

    def cell(value):
        return f"{value:,.2f}" if isinstance(value, float) else str(value if value is not None else "")

    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(cell(row.get(c)) for c in columns) + " |")


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")
