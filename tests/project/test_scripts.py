"""The benchmark and GPU-check scripts: they run, and their time budgets add up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from distill.model.load import native_bf16_cpu

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_limits_cover_every_check_within_its_ten_minutes():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert set(gpu_check.LIMITS_S) == set(gpu_check.CHECKS)
    assert sum(gpu_check.LIMITS_S.values()) < 600  # gpu_check.sh runs the whole script under `timeout 600`


def _bench(script: str, tmp_path: Path, *args: str, judged: bool = False) -> dict:
    """The script's JSON; it must exit 0, or with `judged` 1 exactly when it lists failed cases."""
    out = tmp_path / f"{script}.json"
    proc = subprocess.run(
        [sys.executable, f"scripts/{script}.py", *args, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode in ((0, 1) if judged else (0,)), proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert proc.returncode == (1 if result.get("failed") else 0), proc.stderr[-3000:]
    return result


@pytest.mark.slow
@pytest.mark.extended
def test_bench_dynamics_measures_every_stage_and_the_float32_twin(tiny_model, tmp_path):
    """A smoke run on the tiny model: each stage reports its cost, the probe is set against one trial,
    and on a CPU (where the job's model is already float32) the float32 twin ranks the pool identically.
    (The gradient stage's code is test_probe.py's.)"""
    result = _bench(
        "bench_dynamics",
        tmp_path,
        "--n",
        "8",
        "--model",
        tiny_model,
        "--threads",
        "1",
        "--stages",
        "embed,probe,probe_fp32,trial",
    )
    assert set(result["stages"]) == {"embed", "probe", "probe_fp32", "trial"}
    assert result["stages"]["probe"]["loss_passes"] == result["probe"]["checkpoints"]  # step 0 came from the embed pass
    assert result["stages"]["probe_fp32"]["loss_passes"] == result["probe"]["checkpoints"] + 1
    assert result["probe_over_trial"] > 0 and result["job"] == "quick" and result["max_source_tokens"] == 256
    assert all(row["spearman"] > 0.99 for row in result["fidelity_vs_fp32"].values()), result["fidelity_vs_fp32"]


@pytest.mark.slow
@pytest.mark.extended
def test_bench_generate_measures_its_floor_beside_the_arms(tiny_model, tmp_path):
    result = _bench("bench_generate", tmp_path, "--quick", "--model", tiny_model)
    per_example, batched = result["rows"]
    floor = result["floor"]
    assert (
        floor["prefill_s"] > 0 and floor["decode_step_s"] > 0 and 1 <= floor["decode_steps"] <= result["max_new_tokens"]
    )
    assert floor["floor_s"] < batched["seconds"] * 1.5  # a floor, not an estimate of something else
    assert floor["ceiling_speedup"] == round(per_example["seconds"] / floor["floor_s"], 2)


@pytest.mark.slow
@pytest.mark.extended
def test_bench_train_states_the_flop_ceiling_of_a_leaner_head(tiny_model, tmp_path):
    result = _bench(
        "bench_train", tmp_path, "--quick", "--repeats", "1", "--arms", "trainer,distill", "--model", tiny_model
    )
    ceiling = result["flop_ceiling"]
    assert 0 < ceiling["labelled"] < ceiling["tokens"]
    head, body = ceiling["head_params"], ceiling["body_params"]
    assert ceiling["ceiling_speedup"] == round(
        (body + head) * ceiling["tokens"] / (body * ceiling["tokens"] + head * ceiling["labelled"]), 3
    )
    assert [row["arm"] for row in result["rows"]] == ["trainer", "distill"]


@pytest.mark.slow
@pytest.mark.extended
def test_bench_selectors_gives_every_selector_its_inputs_and_fails_when_one_fails(tmp_path):
    """Every registered selector gets synthetic inputs for the features it needs (the registry's `needs`);
    a selector that fails (here rds_plus on an empty query set) makes the script exit 1, not report None."""
    from distill.select import registry

    small = ("--n", "400", "--dim", "16", "--grad-dim", "32", "--queries", "6")
    result = _bench("bench_selectors", tmp_path, *small)
    assert set(result["methods"]) == set(registry.names())
    assert all(r["seconds"] is not None and "error" not in r for r in result["methods"].values()), result["methods"]
    proc = subprocess.run(
        [sys.executable, "scripts/bench_selectors.py", *small[:-1], "0", "--methods", "random", "rds_plus"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and "1 selector(s) failed: rds_plus" in proc.stderr


@pytest.mark.slow
@pytest.mark.extended
def test_bench_heldout_loss_sets_the_loss_beside_generation(tiny_model, tmp_path):
    result = _bench("bench_heldout_loss", tmp_path, "--quick", "--model", tiny_model)
    assert [row["arm"] for row in result["rows"]] == ["generate", "score (ROUGE + BERTScore)", "heldout_loss"]
    assert all(row["seconds"] > 0 and row["bills"] == 4 for row in result["rows"]) and result["mean_heldout_loss"] > 0


@pytest.mark.slow
@pytest.mark.skipif(not native_bf16_cpu(), reason="this CPU emulates bf16 (no avx512_bf16/amx_bf16): 20-30x slower")
@pytest.mark.extended
def test_bench_bf16_sets_both_precisions_side_by_side_and_judges_them_by_its_tolerances(tiny_model, tmp_path):
    small = ["--set", "train.max_steps=1", "--set", "eval.max_new_tokens=4", "--set", "model.max_source_tokens=32"]
    args = ["--quick", "--model", tiny_model, "--skip-step", "--trials", "2", "--matmul-seconds", "0.1", *small]
    result = _bench("bench_bf16", tmp_path, *args, judged=True)  # bf16 may fail them: the real model's run did
    assert set(result["matmul_gflops"]) == {"float32", "bfloat16", "speedup"} and "native_bf16" in result["cpu"]
    assert [row["method"] for row in result["trials"]] == ["block-0", "block-1"]
    tolerance = result["tolerance"]
    assert tolerance["verdicts"] == "identical"
    for row in result["trials"]:
        assert row["trial_s_fp32"] > 0 and row["trial_s_bf16"] > 0
        over = row["max_example_loss_gap"] > tolerance["example_heldout_loss"]
        assert over == any(f.startswith(f"{row['method']}: an example's held-out loss") for f in result["failed"])
        over = abs(row["rougeL_bf16"] - row["rougeL_fp32"]) > tolerance["method_rougeL"]
        assert over == any(f.startswith(f"{row['method']}: ROUGE-L moved") for f in result["failed"])
