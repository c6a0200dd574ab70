"""The tests against random in the report, the evidence numbers and the recommendation written from them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from distill.config.schema import ReportConfig
from distill.report import stats
from distill.report.advice import next_step
from distill.report.build import build_report
from distill.report.markdown import _about
from distill.store import artifacts


def write_trials(
    out: Path,
    shifts: dict[str, float],
    n: int = 40,
    seeds: int = 1,
    noise: float = 0.05,
    seed_noise: float = 0.0,
    seconds: tuple[float, float] = (100.0, 10.0),
    metric: str = "rougeL",
) -> None:
    """Stored trials (metrics.json + predictions.jsonl) where each method is random's per-example ROUGE-L plus
    `shift`, plus per-seed noise (example-level `noise`, and a shift of the whole seed of SD `seed_noise`).
    BERTScore is constant (no difference), so each method's BERTScore test is a certain null. With `metric`
    "heldout_loss", the trials of a run that did not generate: that score alone, no ROUGE-L or BERTScore."""
    generated = {"bertscore_f1": 0.5} if metric == "rougeL" else {}
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.4, size=n)
    for method, shift in shifts.items():
        for seed in range(seeds):
            jitter = rng.normal(0, noise, n) if method != "random" else np.zeros(n)
            jitter += rng.normal(0, seed_noise) if method != "random" else 0.0
            scores = base + shift + jitter - (jitter.mean() if not seed_noise else 0.0)
            folder = out / "trials" / f"{method}-s{seed}"
            folder.mkdir(parents=True)
            folder.joinpath("predictions.jsonl").write_text(
                "".join(json.dumps({"id": f"d{i}", metric: s, **generated}) + "\n" for i, s in enumerate(scores))
            )
            train_s, eval_s = seconds
            folder.joinpath("metrics.json").write_text(
                json.dumps(
                    {
                        "method": method,
                        "seed": seed,
                        "samples": 10,
                        metric: scores.mean(),
                        "n_eval": n,
                        "select_seconds": 0.0,
                        "train_seconds": train_s,
                        "eval_seconds": eval_s,
                    }
                )
            )
            for name in ("predictions.jsonl", "metrics.json"):  # what a run writes carries a checksum
                artifacts.seal(folder / name)


def build(out: Path, settings: ReportConfig | None = None) -> tuple[dict[str, dict], str]:
    rows = build_report(out, settings, console=Console(file=io.StringIO()))
    return {r["method"]: r for r in rows}, (out / "comparison" / "report.md").read_text()


def _scores(path: Path) -> list[float]:
    return [json.loads(line)["rougeL"] for line in path.read_text().splitlines()]


def test_one_seed_evidence_matches_statsmodels_and_makes_no_claim(tmp_path):
    from statsmodels.stats.power import TTestPower

    write_trials(tmp_path, {"random": 0.0, "a": 0.004, "b": 0.05})
    rows, md = build(tmp_path)
    a = rows["a"]["vs_random"]["rougeL"]
    d = np.array(_scores(tmp_path / "trials/a-s0/predictions.jsonl")) - _scores(
        tmp_path / "trials/random-s0/predictions.jsonl"
    )
    sd, alpha = d.std(ddof=1), 0.05 / 4  # 2 methods × 2 metrics tested: Holm's strictest step
    assert a["mde"] == pytest.approx(TTestPower().solve_power(nobs=40, alpha=alpha, power=0.8) * sd, abs=1e-6)
    assert a["mde_pct"] == pytest.approx(100 * a["mde"] / rows["random"]["rougeL"], abs=1e-3)
    assert a["n_needed"] == int(
        np.ceil(TTestPower().solve_power(effect_size=abs(d.mean()) / sd, alpha=alpha, power=0.8))
    )
    assert a["seeds_needed"] is None and rows["random"]["vs_random"] is None
    # b is far beyond the noise, but one seed cannot tell a better method from a lucky training seed
    b = rows["b"]["vs_random"]["rougeL"]
    assert b["p_holm"] < 1e-6 and b["significant"] is None and b["seeds"] == 1
    recommendation = md.split("## Recommendation")[1]
    assert "**No claim: one seed.**" in recommendation and "--seeds 3" in recommendation
    assert "Use b" not in md and "beat random" not in md.split("## Results")[0].replace("claimed to beat", "")
    assert "1 seed: per-example only" in md and "no claim (1 seed)" in md and "**One seed:**" in md


def test_significant_method_is_recommended(tmp_path):
    write_trials(tmp_path, {"random": 0.0, "good": 0.05, "meh": 0.0}, seeds=3, noise=0.01)
    rows, md = build(tmp_path)
    good, meh = rows["good"]["vs_random"]["rougeL"], rows["meh"]["vs_random"]["rougeL"]
    assert good["significant"] is True and meh["significant"] is False and good["seeds"] == 3
    assert "## Against random" in md and "| good | +0.0500 |" in md and "(forest_rougeL.png)" in md
    recommendation = md.split("## Recommendation")[1]
    assert md.rstrip().endswith(recommendation.rstrip())  # it closes the report
    assert "**Use good.**" in recommendation and "(4 test(s), each at 98.75%, 95% together;" in recommendation
    assert good["verdict"] == "better" and good["ci_simultaneous"][0] > 0 and good["ci_level"] == 1 - 0.05 / 4
    assert meh["verdict"] == "equivalent" and -meh["margin"] < meh["ci_simultaneous"][0]
    assert meh["ci_simultaneous"][1] < meh["margin"] == pytest.approx(0.02 * rows["random"]["rougeL"], abs=1e-6)
    assert "meh" not in recommendation


def test_no_significant_method_is_undecided_not_as_good_and_says_what_would_decide(tmp_path):
    write_trials(
        tmp_path, {"random": 0.0, "slight": 0.004, "worse": -0.001}, n=200, seeds=3, noise=0.05, seconds=(10.0, 100.0)
    )  # evaluation dominates: more examples (a rerun of every trial) cost more
    rows, md = build(tmp_path)
    slight = rows["slight"]["vs_random"]["rougeL"]
    assert not slight["significant"] and slight["mde"] > 0.004
    assert slight["n_needed"] > 200 and slight["seeds_needed"] > 3
    assert slight["cheaper"] == "seeds"
    assert f"**{_about(slight['n_needed'])}" not in md and f"**{slight['seeds_needed'] - 3} more seed(s)**" in md
    # "not significant" is not "as good as random": the 0.004 difference is neither excluded from 0 nor within ±δ
    assert slight["verdict"] == "undecided" and slight["seeds_to_decide"] > 3
    recommendation = md.split("## Recommendation")[1]
    assert "**No decision yet.**" in recommendation and "as good" not in recommendation
    assert "200 held-out examples, 3 seed(s)" in recommendation and "--until-decided" in recommendation
    assert f"about {slight['seeds_to_decide']} seeds ({slight['seeds_to_decide'] - 3} more" in recommendation


def test_a_method_seeds_cannot_decide_is_sent_to_the_planner_not_to_until_decided():
    """`--until-decided` only adds seeds: where no number of seeds would decide (a difference about ±δ with the
    example noise of this test set), the advice names the planner, whose designs add held-out examples."""
    by_seeds = next_step({"seeds_to_decide": 7, "seeds": 3, "examples": 50, "margin": 0.004882})
    assert "about 7 seeds (4 more, on these 50 examples)" in by_seeds and "--until-decided` into the same" in by_seeds
    out_of_reach = next_step({"seeds_to_decide": None, "seeds": 3, "examples": 50, "margin": 0.004882})
    assert "more seeds alone would not decide it: the example-to-example noise of these 50" in out_of_reach
    assert "`distill plan <this run> --mde 0.004882`" in out_of_reach and "--test-size" in out_of_reach


def test_seeds_needed_never_reads_as_a_negative_count(tmp_path):
    """The old report printed `seeds_needed - seeds` even when fewer seeds than run would do."""
    write_trials(tmp_path, {"random": 0.0, "clear": 0.03}, n=100, seeds=4, noise=0.05)
    rows, md = build(tmp_path)
    clear = rows["clear"]["vs_random"]["rougeL"]
    assert clear["significant"] and clear["seeds_needed"] <= 4
    assert "-1 more" not in md and "-2 more" not in md and "| detected |" in md


def test_seed_noise_is_counted(tmp_path):
    """Each method seed shifts every example together (SD 0.02): the per-seed differences swing, and the test
    (unlike a per-example test on seed means) does not call a 0.01 difference certain."""
    write_trials(tmp_path, {"random": 0.0, "shifty": 0.01}, n=500, seeds=3, noise=0.05, seed_noise=0.02)
    rows, _ = build(tmp_path)
    test = rows["shifty"]["vs_random"]["rougeL"]
    per_example = stats.compare(
        *(
            np.mean([_scores(tmp_path / f"trials/{m}-s{s}/predictions.jsonl") for s in range(3)], axis=0)
            for m in ("shifty", "random")
        )
    )
    assert per_example.p_value < 1e-4 < test["p"]
    assert test["ci95"][1] - test["ci95"][0] > 4 * (per_example.ci95[1] - per_example.ci95[0])


def test_nothing_better_and_the_holm_family_follows_report_metrics(tmp_path):
    write_trials(tmp_path, {"random": 0.0, "worse": -0.03}, seeds=2, noise=0.01)
    rows, md = build(tmp_path)
    assert rows["worse"]["vs_random"]["rougeL"]["verdict"] == "worse"
    assert "**Use random.**" in md.split("## Recommendation")[1] and "worse: worse" in md.split("## Recommendation")[1]
    assert set(rows["worse"]["vs_random"]) == {"rougeL", "bertscore_f1"}  # heldout_loss: not in these predictions
    rows, md = build(tmp_path, ReportConfig(metrics=["rougeL"]))
    assert set(rows["worse"]["vs_random"]) == {"rougeL"} and "over 1 test(s)" in md


def test_unequal_seeds_pair_the_common_ones(tmp_path):
    write_trials(tmp_path, {"random": 0.0, "a": 0.02}, seeds=3, noise=0.01)
    for name in ("metrics.json", "predictions.jsonl"):
        (tmp_path / "trials/random-s2" / name).unlink()
        artifacts.sidecar(tmp_path / "trials/random-s2" / name).unlink()
    (tmp_path / "trials/random-s2").rmdir()
    rows, _ = build(tmp_path)
    assert rows["a"]["seeds"] == 3 and rows["a"]["vs_random"]["rougeL"]["seeds"] == 2


def test_about_rounds_up_to_two_significant_digits():
    assert [_about(n) for n in (7, 42, 99, 100, 4093, 4100, 123456)] == [
        "7",
        "42",
        "99",
        "100",
        "4,100",
        "4,100",
        "130,000",
    ]


def test_a_loss_only_run_tables_held_out_loss_not_empty_generation_columns(tmp_path):
    """eval.generate false: the report and the console table show held-out loss (lowest first), with its CI and
    test, and no ROUGE-L, BERTScore or share-of-full columns of dashes."""
    write_trials(tmp_path, {"random": 0.0, "worse": 0.3, "better": -0.3}, seeds=3, metric="heldout_loss")
    console = Console(file=io.StringIO(), width=80)
    rows = build_report(tmp_path, ReportConfig(metrics=["heldout_loss"]), console=console)
    md = (tmp_path / "comparison" / "report.md").read_text()
    assert [r["method"] for r in rows] == ["random", "better", "worse"]  # lower loss first
    table = md.split("## Results")[1].split("\n\n")[1]
    assert table.startswith("| Method | Held-out loss ±95% CI | p (Holm) | Verdict | Samples | Seeds | Time(s) |")
    assert "ROUGE-L" not in table and "BERTScore model" not in md and "lower is better" in md
    assert "The lowest among the subset methods is **better**" in md
    assert (
        rows[1]["vs_random"]["heldout_loss"]["significant"] and "**better** better than random on held-out loss" in md
    )
    assert rows[2]["vs_random"]["heldout_loss"]["verdict"] == "worse" and "**Use better.**" in md
    shown = console.file.getvalue()
    assert "held-out loss" in shown and "ROUGE-L" not in shown and "BERTScore" not in shown
    assert max(map(len, shown.splitlines())) <= 80


def test_a_loss_only_run_refuses_generated_metrics_and_draws_no_empty_cost_plot(tmp_path):
    """`distill report --metrics rougeL` on a run that did not generate: exit 2, naming what it scored; and its
    report has no cost plot (cost vs ROUGE-L has no points), only the plots that have data."""
    from tests.cli_helpers import assert_one_line_error, run_cli

    write_trials(tmp_path, {"random": 0.0, "better": -0.3}, seeds=2, metric="heldout_loss")
    result = run_cli("report", str(tmp_path), "--metrics", "rougeL", cwd=tmp_path)
    assert_one_line_error(result, "this run did not generate; its metrics are heldout_loss", "--metrics heldout_loss")
    assert not (tmp_path / "comparison").exists()  # refused before anything was written
    (tmp_path / "comparison").mkdir()
    (tmp_path / "comparison" / "cost.png").write_bytes(b"an earlier report's plot")
    build_report(tmp_path, ReportConfig(metrics=["heldout_loss"]), console=Console(file=io.StringIO()))
    drawn = sorted(p.name for p in (tmp_path / "comparison").glob("*.png"))
    assert drawn == ["forest_heldout_loss.png"]
    assert "cost.png" not in (tmp_path / "comparison" / "report.md").read_text()
