"""--until-decided end to end: seeds go only to undecided methods, the run stops at its budget, and `distill resume`
of a run whose driver died between looks continues it (a real process death: distill.faults, os._exit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distill import faults
from distill.report.sequential import Design
from distill.runtime import adaptive
from tests.clusters import stop_ray

REPO = Path(__file__).resolve().parents[2]

# random's own subset under another name: trained with the same seeds it scores exactly as random does, so its
# verdict is *equivalent* from the first look; balanced_lengths, on 4 held-out examples and with a margin of 1e-5 of
# random's loss, stays undecided
TWIN = """
from distill.select import register, registry


@register("random_twin", description="random's subset under another name", cost="O(n)")
def random_twin(features, k, seed):
    return registry.select("random", features, k, seed)
"""


def _rows(**verdicts: str) -> list[dict]:
    return [{"method": m, "vs_random": {"heldout_loss": {"verdict": v}} if v else None} for m, v in verdicts.items()]


def test_the_next_round_pairs_random_with_the_undecided_methods_only():
    design = Design(first=2, step=2, looks=3)
    rows = _rows(random=None, a="equivalent", b="undecided", c="better", d="undecided")
    assert adaptive.next_round(design, 2, rows) == [(m, s) for m in ("random", "b", "d") for s in (2, 3)]
    assert adaptive.next_round(design, 3, rows)[0] == ("random", 4)
    assert adaptive.next_round(design, 2, _rows(random=None, a="worse")) == []


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    marker = f"distill-adaptive-{os.getpid()}"
    full_env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "DISTILL_TEST_RAY": marker,
        **env,
    }
    try:
        return subprocess.run(
            [sys.executable, "-m", "distill", *args],
            env=full_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        stop_ray(marker)  # what a driver that died left running


@pytest.mark.slow
@pytest.mark.extended
def test_until_decided_adds_seeds_to_undecided_methods_stops_at_its_budget_and_resumes(tiny_job, tmp_path):
    plugin = tmp_path / "twin.py"
    plugin.write_text(TWIN)
    tiny_job["seeds"] = 2
    tiny_job["select"].update(methods=["random", "random_twin", "balanced_lengths"], plugins=[str(plugin)])
    tiny_job["eval"].update(generate=False)
    tiny_job["report"] = {"metrics": ["heldout_loss"], "margin_heldout_loss": 1e-5}
    tiny_job["adaptive"] = {"looks": 3, "seeds_per_look": 1}
    job, out, faults_dir = tmp_path / "job.yaml", Path(tiny_job["output_dir"]), tmp_path / "faults"
    job.write_text(yaml.safe_dump(tiny_job))
    faults_dir.mkdir()

    # look 1 (6 trials), then the driver dies as look 2 starts
    died = _run(
        ["quick", "--job", str(job), "--until-decided", "9"],
        tmp_path,
        DISTILL_FAULT="adaptive_look:2:exit",
        DISTILL_FAULT_DIR=str(faults_dir),
    )
    assert died.returncode == faults.EXIT_CODE, died.stdout + died.stderr
    assert sorted(p.name for p in (out / "trials").iterdir()) == [
        f"{m}-s{s}" for m in ("balanced_lengths", "random", "random_twin") for s in (0, 1)
    ]

    resumed = _run(["resume", str(out)], tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # look 2 gave seed 2 to random and the undecided balanced_lengths only; look 3 would pass 9 trials: not run
    assert sorted(p.name for p in (out / "trials").iterdir()) == sorted(
        [f"{m}-s{s}" for m in ("balanced_lengths", "random") for s in (0, 1, 2)] + ["random_twin-s0", "random_twin-s1"]
    )
    assert "past the budget of 9 (8 spent)" in resumed.stdout + resumed.stderr
    rows = {r["method"]: r for r in json.loads((out / "comparison/results.json").read_text())["rows"]}
    twin, balanced = (
        rows["random_twin"]["vs_random"]["heldout_loss"],
        rows["balanced_lengths"]["vs_random"]["heldout_loss"],
    )
    assert (twin["verdict"], twin["seeds"], twin["look"]) == ("equivalent", 2, 1)
    assert (balanced["verdict"], balanced["seeds"], balanced["look"]) == ("undecided", 3, 2)
    assert twin["ci_level"] == pytest.approx(1 - 0.05 / (2 * 3))  # 2 tests × 3 looks, from the first look on
