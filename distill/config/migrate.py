"""Keys that moved or retired: an old run.json still resumes and rebuilds, a job or override still using one is
refused with the key to use instead."""

from __future__ import annotations

from typing import Any

import yaml

from distill.errors import DistillError

# Keys moved when the config was split by what they affect (results schema version 2): old → new.
MOVED_KEYS = {
    "eval.vllm_max_loras": "resources.vllm_max_loras",
    "eval.vllm_max_num_seqs": "resources.vllm_max_num_seqs",
    "eval.vllm_gpu_memory_utilization": "resources.vllm_gpu_memory_utilization",
    "eval.vllm_cpu_kvcache_gib": "resources.vllm_cpu_kvcache_gib",
}


# Keys that no longer exist: the results schema version that retired them (a run.json written before it may hold
# them) and why.
NO_RESAMPLING = "the report no longer resamples (docs/statistics.md)"
NO_SILENT_DROPS = "an empty prompt or response is an error naming the row; no row is dropped silently"
RETIRED_KEYS = {
    "report.bootstrap_samples": (3, NO_RESAMPLING),
    "eval.bootstrap_samples": (3, NO_RESAMPLING),
    "data.min_text_chars": (4, NO_SILENT_DROPS),
    "data.min_summary_chars": (4, NO_SILENT_DROPS),
}


def move_keys(values: dict[str, Any], migrate: bool, written_in: int | None = None) -> None:
    """Old keys (MOVED_KEYS) in a mapping of settings: moved to their new place (`migrate`: an old run.json),
    else refused with one line naming the new key (a job or an override still using one). Retired keys
    (RETIRED_KEYS) are dropped from a run.json `written_in` a schema version before they retired, else refused
    likewise."""
    for old, new in MOVED_KEYS.items():
        if (found := _holding(values, old)) is None:
            continue
        if not migrate:
            raise DistillError(
                f"config key '{old}' has moved to '{new}'",
                f"rename it to '{new}' in the job YAML (or pass --set {new}=VALUE)",
            )
        set_key(values, new, found[0].pop(found[1]))
    for old, (retired_in, why) in RETIRED_KEYS.items():
        if (found := _holding(values, old)) is None:
            continue
        if written_in is None or written_in >= retired_in:
            raise DistillError(
                f"config key '{old}' is no longer used: {why}", "delete it from the job YAML (or drop that --set)"
            )
        del found[0][found[1]]


def _holding(values: dict[str, Any], dotted: str) -> tuple[dict[str, Any], str] | None:
    """(the section mapping, the key) when `values` sets the 'section.key' `dotted`, else None."""
    section_name, key = dotted.split(".")
    node = values.get(section_name)
    return (node, key) if isinstance(node, dict) and key in node else None


def set_key(values: dict[str, Any], dotted: str, value: Any) -> None:
    """Apply one override 'section.key=value' to a nested mapping (YAML-typed value)."""
    *parents, leaf = dotted.split(".")
    node = values
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise DistillError(f"override '{dotted}' goes through a non-section key '{part}'", "use section.key=value")
    node[leaf] = _yaml_value(value) if isinstance(value, str) else value


YAML_NULLS = ("", "~", "null", "Null", "NULL")  # how YAML writes null; any other text YAML reads as null is a comment


def _yaml_value(text: str) -> Any:
    """An override's value as YAML types it, except that text YAML would drop as a comment ('# Answer:') stays
    text: a prompt or a system message beginning with '#' must not silently become null."""
    value = yaml.safe_load(text)
    return text if value is None and text.strip() not in YAML_NULLS else value
