"""The 'how much evidence' numbers in the report and the recommendation written from them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from distill import artifacts, stats
from distill.config import ReportConfig
from distill.report import _about, build_report


def write_trials(out: Path, shifts: dict[str, float], n: int = 40, seeds: int = 1, noise: float = 0.05) -> None:
    """Stored trials (metrics.json + predictions.jsonl) where each method is random's per-example ROUGE-L
    plus `shift` plus noise."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.4, size=n)
    for method, shift in shifts.items():
        for seed in range(seeds):
            jitter = rng.normal(0, noise, n) if method != "random" else np.zeros(n)
            scores = base + shift + jitter - jitter.mean()  # observed difference == shift, exactly
            folder = out / "trials" / f"{method}-s{seed}"
            folder.mkdir(parents=True)
            folder.joinpath("predictions.jsonl").write_text("".join(
                json.dumps({"id": f"d{i}", "rougeL": s, "bertscore_f1": 0.5}) + "\n" for i, s in enumerate(scores)))
            folder.joinpath("metrics.json").write_text(json.dumps(
                {"method": method, "seed": seed, "samples": 10, "rougeL": scores.mean(), "n_eval": n}))
            for name in ("predictions.jsonl", "metrics.json"):  # what a run writes carries a checksum
                artifacts.seal(folder / name)


def build(out: Path) -> tuple[dict[str, dict], str]:
    rows = build_report(out, ReportConfig(bootstrap_samples=500), console=Console(file=io.StringIO()))
    return {r["method"]: r for r in rows}, (out / "comparison" / "report.md").read_text()


def test_evidence_columns_match_statsmodels(tmp_path):
    from statsmodels.stats.power import TTestPower

    write_trials(tmp_path, {"random": 0.0, "a": 0.004, "b": -0.01})
    rows, _ = build(tmp_path)
    a = rows["a"]
    d = stats.paired_differences(
        [json.loads(line)["rougeL"] for line in (tmp_path / "trials/a-s0/predictions.jsonl").read_text().splitlines()],
        [json.loads(line)["rougeL"] for line in (tmp_path / "trials/random-s0/predictions.jsonl").read_text().splitlines()])
    sd, alpha = d.std(ddof=1), 0.05 / 2  # two methods tested: Holm's strictest step
    assert a["mde_rougeL"] == pytest.approx(TTestPower().solve_power(nobs=40, alpha=alpha, power=0.8) * sd, abs=1e-6)
    assert a["mde_pct"] == pytest.approx(100 * a["mde_rougeL"] / rows["random"]["rougeL"], abs=1e-3)
    n_needed = TTestPower().solve_power(effect_size=abs(d.mean()) / sd, alpha=alpha, power=0.8)
    assert a["n_needed"] == int(np.ceil(n_needed))
    assert a["seeds_needed"] is None  # one seed
    assert rows["random"]["mde_rougeL"] is None and rows["random"]["n_needed"] is None


def test_significant_method_is_recommended(tmp_path):
    write_trials(tmp_path, {"random": 0.0, "good": 0.05, "meh": 0.0}, noise=0.01)
    rows, md = build(tmp_path)
    assert rows["good"]["significant"] is True and rows["meh"]["significant"] is False
    assert "## How much evidence" in md and "| good | +0.05" in md
    recommendation = md.split("## Recommendation")[1]
    assert md.rstrip().endswith(recommendation.rstrip())  # it closes the report
    assert "**Use good.**" in recommendation and "significant after Holm correction over 2 comparison(s)" in recommendation
    assert "meh" not in recommendation


def test_no_significant_method_says_random_is_as_good_and_what_run_would_decide(tmp_path):
    # n large enough that the seed-noise split of var(d) is estimated well (the seed projection needs it)
    write_trials(tmp_path, {"random": 0.0, "slight": 0.0015, "worse": -0.001}, n=1000, seeds=2)
    rows, md = build(tmp_path)
    slight = rows["slight"]
    assert not slight["significant"] and slight["n_needed"] > 1000 and slight["seeds_needed"] > 2
    recommendation = md.split("## Recommendation")[1]
    assert "**No method is recommended.**" in recommendation
    assert "random is as good as any method tested" in recommendation and "1000 held-out examples, 2 seed(s)" in recommendation
    assert f"n ≈ {_about(slight['n_needed'])} held-out examples" in recommendation
    assert f"or {slight['seeds_needed'] - 2} more seed(s) ({slight['seeds_needed']} in all)" in recommendation
    assert f"{slight['mde_rougeL']:.4f} ROUGE-L" in recommendation


def test_nothing_above_random_and_one_seed(tmp_path):
    write_trials(tmp_path, {"random": 0.0, "worse": -0.03}, noise=0.01)
    _, md = build(tmp_path)
    assert "No method even scored above random" in md.split("## Recommendation")[1]
    write_trials(tmp_path / "one", {"random": 0.0, "slight": 0.004}, n=30)
    _, md = build(tmp_path / "one")
    assert "cannot be estimated from one seed" in md.split("## Recommendation")[1]


def test_about_rounds_up_to_two_significant_digits():
    assert [_about(n) for n in (7, 42, 99, 100, 4093, 4100, 123456)] == ["7", "42", "99", "100", "4,100", "4,100",
                                                                          "130,000"]
