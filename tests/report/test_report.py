"""build_report on a synthetic output directory written in the on-disk contract."""

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from distill.errors import DistillError
from distill.report.build import build_report
from distill.store import artifacts
from distill.store.outdir import seeded_name
from distill.store.records import COLUMNS, SCHEMA_VERSION, SCORE_KEYS, read_results

N_EX = 30
# method -> (shift added to random's per-example ROUGE-L, samples, train seconds, peak MB)
METHODS = {
    "random": (0.0, 40, 10.0, 900.0),
    "clustering": (0.08, 40, 11.0, 910.0),  # clearly better
    "length_diversity": (0.0, 40, 10.5, 905.0),  # identical to random
    "embedding_centroid": (-0.01, 40, 9.0, 900.0),
    "full": (0.10, 400, 100.0, 2000.0),
}


def _write_run(out, with_run_json=True):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.5, size=N_EX)
    ids = [f"doc{i:03d}" for i in range(N_EX)]
    for method, (shift, samples, train_s, mem) in METHODS.items():
        for seed in (0, 1):
            noise = 0.0 if method in ("random", "length_diversity") else rng.normal(0, 0.01, N_EX)
            rl = np.clip(base + shift + noise + 0.002 * seed, 0, 1)
            bs = np.clip(0.8 + rl / 5, 0, 1)
            tdir = out / "trials" / f"{method}_s{seed}"
            tdir.mkdir(parents=True)
            empty = [i == 0 and method == "embedding_centroid" for i in range(N_EX)]
            rl = np.where(empty, 0.0, rl)
            with open(tdir / "predictions.jsonl", "w") as f:
                for i in range(N_EX):
                    f.write(
                        json.dumps(
                            {
                                "id": ids[i],
                                "prediction": "" if empty[i] else "p",
                                "reference": "r",
                                "rouge1": rl[i],
                                "rouge2": rl[i] / 2,
                                "rougeL": rl[i],
                                "bertscore_f1": bs[i],
                                "empty": empty[i],
                            }
                        )
                        + "\n"
                    )
            metrics = {
                "trial": tdir.name,
                "method": method,
                "seed": seed,
                "samples": samples,
                "rouge1": rl.mean(),
                "rouge2": rl.mean() / 2,
                "rougeL": rl.mean(),
                "bertscore_f1": bs.mean(),
                "n_eval": N_EX,
                "n_empty": sum(empty),
                "bertscore_model": "minilm-offline",
                "select_seconds": 1.0,
                "train_seconds": train_s,
                "eval_seconds": 5.0,
                "time_s": 6.0 + train_s,
                "gpu_seconds": 0.0,
                "peak_memory_mb": mem,
                "train_tokens": samples * 100,
                "device": "cpu",
            }
            (tdir / "metrics.json").write_text(json.dumps(metrics))
            if method != "full":
                name = f"{method if seed == 0 else seeded_name(method, seed)}.jsonl"
                (out / "selected").mkdir(exist_ok=True)
                with open(out / "selected" / name, "w") as f:
                    for j in range(samples):
                        n = int(rng.integers(50, 500)) + (200 if method == "clustering" else 0)
                        f.write(
                            json.dumps(
                                {"index": j, "id": f"t{j}", "title": "", "text": "x", "summary": "y", "n_words": n}
                            )
                            + "\n"
                        )
    (out / "pool_stats.json").write_text(json.dumps({"n_words": rng.integers(20, 900, 400).tolist()}))
    if with_run_json:
        (out / "run.json").write_text(
            json.dumps(
                {
                    "schema_version": SCHEMA_VERSION,
                    "test_model": True,
                    "name": "synthetic",
                    "mode": "quick",
                    "model": "hf-internal-testing/tiny-random-LlamaForCausalLM",
                    "dataset": "embedded:billsum",
                    "pool_size": 400,
                    "test_size": N_EX,
                    "fraction": 0.1,
                    "seeds": 2,
                    "bertscore_model": "minilm-offline",
                    "git_commit": "abc123",
                    "versions": {"torch": "2.x"},
                    "config": {"train": {"lora_r": 8, "learning_rate": 3e-4}},
                }
            )
        )
    for path in list(out.rglob("*")):  # what a run writes carries a checksum (distill.store.artifacts)
        if path.is_file():
            artifacts.seal(path)


def _console():
    return Console(file=io.StringIO(), width=200)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    _write_run(out)
    console = _console()
    rows = build_report(out, console=console)
    return out, rows, console.file.getvalue()


def test_rows_order_and_fields(built):
    out, rows, _ = built
    assert [r["method"] for r in rows] == ["random", "clustering", "length_diversity", "embedding_centroid", "full"]
    stored = json.loads((out / "comparison" / "results.json").read_text())
    assert stored == {"schema_version": SCHEMA_VERSION, "rows": rows}
    assert [r.to_dict() for r in read_results(stored, "results.json")] == rows
    by = {r["method"]: r for r in rows}
    rand, clus, full = by["random"], by["clustering"], by["full"]
    assert rand["vs_random_pct"] == 0.0 and rand["vs_random"] is None and full["vs_random"] is None
    assert clus["vs_random_pct"] == pytest.approx(100 * (clus["rougeL"] - rand["rougeL"]) / rand["rougeL"], abs=1e-3)
    assert clus["pct_of_full"] == pytest.approx(100 * clus["rougeL"] / full["rougeL"], abs=1e-3)
    assert full["pct_of_full"] == pytest.approx(100.0)
    for metric in ("rougeL", "bertscore_f1"):  # every method × metric is one test of one Holm family
        test = clus["vs_random"][metric]
        assert test["significant"] is True and test["p_holm"] < 0.05 and test["effect_size"] > 1
        assert test["p_holm"] >= test["p"] and test["seeds"] == 2 and test["examples"] == N_EX
        assert test["ci95"][0] > 0 and test["mde"] > 0
        same = by["length_diversity"]["vs_random"][metric]
        assert same["significant"] is False and same["p"] == 1.0 and same["diff"] == 0.0
    assert clus["vs_random"]["rougeL"]["diff"] == pytest.approx(clus["rougeL"] - rand["rougeL"], abs=1e-6)
    for r in rows:
        lo, hi = r["rougeL_ci95"]
        assert lo <= r["rougeL"] <= hi
        assert r["seeds"] == 2 and r["n_eval"] == N_EX
        assert r["rougeL_per_gpu_hour"] is None and r["rougeL_per_cpu_hour"] > 0
    assert by["embedding_centroid"]["n_empty"] == 2
    assert full["samples"] == 400 and full["train_seconds"] == 100.0


def test_files_plots_markdown_and_console(built):
    out, rows, printed = built
    comp = out / "comparison"
    for png in ("forest_rougeL.png", "forest_bertscore_f1.png", "cost.png", "lengths.png"):
        data = (comp / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    with open(comp / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == [r["method"] for r in rows]
    assert "rougeL_ci95_lo" in table[0] and "rougeL_ci95_hi" in table[0]
    clustering = table[1]
    assert float(clustering["vs_random.rougeL.p_holm"]) == rows[1]["vs_random"]["rougeL"]["p_holm"]
    assert float(clustering["vs_random.bertscore_f1.ci95_lo"]) == rows[1]["vs_random"]["bertscore_f1"]["ci95"][0]
    assert clustering["vs_random.rougeL.significant"] == "true" and table[0]["vs_random.rougeL.p"] == ""
    md = (comp / "report.md").read_text()
    assert "| Method | ROUGE-L ±95% CI | BERTScore-F1 | vs Random % | % of full | p (Holm) |" in md
    assert "| clustering |" in md and "not significant" in md
    assert "never results" in md  # tiny test model note
    assert "minilm-offline" in md and "**clustering** better than random on ROUGE-L" in md
    assert "## Against random" in md and "### ROUGE-L (higher is better)" in md and "### BERTScore-F1" in md
    for png in ("forest_rougeL.png", "forest_bertscore_f1.png", "cost.png", "lengths.png"):
        assert f"({png})" in md
    assert md.index("(forest_rougeL.png)") < md.index("(cost.png)")  # the tested quantity is the main figure
    assert "clustering" in printed and "ROUGE-L" in printed


def test_rebuild_is_byte_identical(built):
    out, _, _ = built
    comp = out / "comparison"
    names = ("results.json", "results.csv", "report.md")
    before = {n: (comp / n).read_bytes() for n in names}
    build_report(out, console=_console())
    assert {n: (comp / n).read_bytes() for n in names} == before


def test_without_run_json_or_random(tmp_path):
    _write_run(tmp_path, with_run_json=False)
    for seed in (0, 1):
        for f in (tmp_path / "trials" / f"random_s{seed}").iterdir():
            f.unlink()
        (tmp_path / "trials" / f"random_s{seed}").rmdir()
    rows = build_report(tmp_path, console=_console())
    assert rows[-1]["method"] == "full"
    assert all(r["vs_random_pct"] is None and r["vs_random"] is None for r in rows)
    md = (tmp_path / "comparison" / "report.md").read_text()
    assert "never results" not in md and "run.json not found" in md


def test_missing_trials_raises(tmp_path):
    with pytest.raises(DistillError) as err:
        build_report(tmp_path, console=_console())
    assert "no trial results" in err.value.problem and "python -m distill quick" in err.value.fix


def test_missing_predictions_give_no_ci_and_mismatched_ids_raise(tmp_path):
    _write_run(tmp_path)
    (tmp_path / "trials" / "clustering_s0" / "predictions.jsonl").unlink()
    rows = {r["method"]: r for r in build_report(tmp_path, console=_console())}
    assert rows["clustering"]["rougeL_ci95"] is None and rows["clustering"]["vs_random"] is None
    assert rows["length_diversity"]["vs_random"]["rougeL"]["p_holm"] == pytest.approx(1.0)
    pred = tmp_path / "trials" / "full_s1" / "predictions.jsonl"
    pred.write_text(pred.read_text().replace("doc000", "other"))
    artifacts.seal(pred)
    with pytest.raises(DistillError, match="different held-out examples"):
        build_report(tmp_path, console=_console())


@pytest.mark.parametrize("damage", ["truncate", "flip", "unsealed"])
def test_a_damaged_stored_file_is_named_never_used(tmp_path, damage):
    _write_run(tmp_path)
    path = tmp_path / "trials" / "random_s1" / "predictions.jsonl"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "flip":
        data = bytearray(path.read_bytes())
        data[10] ^= 1
        path.write_bytes(bytes(data))
    else:
        artifacts.sidecar(path).unlink()
    with pytest.raises(DistillError, match="random_s1/predictions.jsonl is damaged") as err:
        build_report(tmp_path, console=_console())
    assert "rerun the experiment" in err.value.fix


def _rewrite(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del data[key]
    path.write_text(json.dumps(data))
    artifacts.seal(path)


def test_files_from_before_versioning_load_as_version_1(tmp_path):
    """Today's trial files carry no schema_version (see _write_run); a version-1 run.json records no test_model."""
    _write_run(tmp_path)
    _rewrite(tmp_path / "run.json", schema_version=None, test_model=None)
    rows = build_report(tmp_path, console=_console())
    assert len(rows) == len(METHODS)
    assert "never results" not in (tmp_path / "comparison" / "report.md").read_text()  # no flag: not a test model
    assert [r.method for r in read_results(rows, "results.json")] == [r["method"] for r in rows]  # the bare list


@pytest.mark.parametrize("name", ["trials/random_s0/metrics.json", "run.json"])
def test_a_file_from_a_newer_distill_is_refused_in_one_line(tmp_path, name):
    _write_run(tmp_path)
    _rewrite(tmp_path / name, schema_version=SCHEMA_VERSION + 1)
    with pytest.raises(DistillError) as err:
        build_report(tmp_path, console=_console())
    assert name in err.value.problem and f"schema version {SCHEMA_VERSION + 1}" in err.value.problem
    assert str(SCHEMA_VERSION) in err.value.problem and "\n" not in str(err.value)


def test_every_score_metric_has_a_column():
    """Adding a Metric to records.SCORE_METRICS without its ReportRow column fails here, not in a run."""
    assert set(SCORE_KEYS) <= set(COLUMNS)


@pytest.mark.parametrize("bad", [float("nan"), None, "missing"])
def test_a_bad_score_is_one_line_naming_the_trial_and_the_example(tmp_path, bad):
    """A NaN, a null or a missing per-example score: `distill report` exits 2 with one line, no traceback."""
    from tests.cli_helpers import assert_one_line_error, run_cli

    _write_run(tmp_path)
    path = tmp_path / "trials" / "clustering_s1" / "predictions.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    if bad == "missing":
        del rows[3]["bertscore_f1"]
    else:
        rows[3]["bertscore_f1"] = bad
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    artifacts.seal(path)
    line = assert_one_line_error(
        run_cli("report", str(tmp_path), cwd=tmp_path), "clustering_s1", "doc003", "bertscore_f1", "re-run that trial"
    )
    assert ("nan" in line) if bad != "missing" and bad is not None else ("no bertscore_f1" in line)


def test_an_exported_folder_rebuilds_the_same_results(tmp_path, built):
    """`distill report RUN --export DIR` keeps only what the report reads (no generated or reference texts),
    and DIR alone rebuilds a byte-identical results.json."""
    from tests.cli_helpers import run_cli

    out, _, _ = built
    dest = tmp_path / "published"
    result = run_cli("report", str(out), "--export", str(dest), cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (dest / "comparison" / "results.json").read_bytes() == (out / "comparison" / "results.json").read_bytes()
    assert (dest / "comparison" / "results.csv").read_bytes() == (out / "comparison" / "results.csv").read_bytes()
    kept = json.loads((dest / "trials" / "clustering_s0" / "predictions.jsonl").read_text().splitlines()[0])
    assert set(kept) == {"id", "rouge1", "rouge2", "rougeL", "bertscore_f1", "empty"}
    selected = json.loads((dest / "selected" / "clustering.jsonl").read_text().splitlines()[0])
    assert set(selected) == {"index", "id", "n_words"} and (dest / "pool_stats.json").is_file()
    again = run_cli("report", str(out), "--export", str(dest), cwd=tmp_path)  # never over an earlier export
    assert again.returncode == 2 and "already has files" in again.stderr


def test_a_results_json_from_before_per_metric_tests_still_reads():
    """Version 2 rows had the ROUGE-L test in flat columns; they read without vs_random."""
    row = {
        "method": "a",
        "samples": 1,
        "seeds": 1,
        "rouge1": 0.1,
        "rouge2": 0.1,
        "rougeL": 0.1,
        "rougeL_ci95": None,
        "bertscore_f1": 0.5,
        "bertscore_f1_ci95": None,
        "vs_random_pct": 1.0,
        "pct_of_full": None,
        "p_holm": 0.5,
        "significant": False,
        "time_s": 1.0,
        "select_seconds": None,
        "train_seconds": None,
        "eval_seconds": None,
        "gpu_seconds": None,
        "rougeL_per_gpu_hour": None,
        "rougeL_per_cpu_hour": None,
        "peak_memory_mb": None,
        "train_tokens": None,
        "n_empty": 0,
        "n_eval": 5,
        "device": None,
        "bertscore_model": None,
        "eval_engine": None,
    }
    (read,) = read_results({"schema_version": 2, "rows": [row]}, "results.json")
    assert read.vs_random is None and read.heldout_loss is None and read.rougeL == 0.1


def test_a_rebuild_tests_the_runs_own_metrics_unless_told(tmp_path):
    """`distill report` tests what the run was started with (run.json's report.metrics); --metrics replaces it
    for this rebuild only, and a name that is not a metric is refused before anything is written."""
    from tests.cli_helpers import run_cli

    out = tmp_path / "run"
    _write_run(out)
    run = json.loads((out / "run.json").read_text())
    run["config"]["report"] = {"metrics": ["bertscore_f1"]}
    (out / "run.json").write_text(json.dumps(run))
    artifacts.seal(out / "run.json")

    def tested() -> set[str]:
        rows = json.loads((out / "comparison" / "results.json").read_text())["rows"]
        return {name for r in rows for name in (r["vs_random"] or {})}

    assert run_cli("report", str(out), cwd=tmp_path).returncode == 0
    assert tested() == {"bertscore_f1"}
    assert run_cli("report", str(out), "--metrics", "rougeL", "--overwrite", cwd=tmp_path).returncode == 0
    assert tested() == {"rougeL"}
    refused = run_cli("report", str(out), "--metrics", "rougeL,bleu", "--overwrite", cwd=tmp_path)
    assert refused.returncode == 2 and "report.metrics" in refused.stderr and "bleu" in refused.stderr
    assert tested() == {"rougeL"}  # the last report stands


PUBLISHED = Path(__file__).resolve().parents[2] / "docs" / "results"


@pytest.mark.parametrize("run", sorted(p.name for p in PUBLISHED.iterdir() if (p / "trials").is_dir()))
def test_a_published_run_rebuilds_from_its_folder_alone(run, tmp_path):
    """docs/results/<run> (written by `distill report --export`) keeps every trial's per-example scores: a copy of
    the folder alone rebuilds the published results.json byte for byte, so any correction of the statistics can
    be re-applied to published runs."""
    from tests.cli_helpers import run_cli

    copy = tmp_path / run
    shutil.copytree(PUBLISHED / run, copy)
    published = (copy / "comparison" / "results.json").read_bytes()
    shutil.rmtree(copy / "comparison")
    result = run_cli("report", str(copy), cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (copy / "comparison" / "results.json").read_bytes() == published


def test_a_rebuilt_report_is_readable_by_the_group_as_the_run_is(tmp_path):
    """Under the usual umask 022 every file a rebuild writes (and its checksum) is 0644, as a file the user
    creates is: mkstemp's 0600 survived the atomic rename and hid shared results from the group."""
    import os

    _write_run(tmp_path)
    before = os.umask(0o022)
    try:
        build_report(tmp_path, console=_console())
    finally:
        os.umask(before)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "comparison").iterdir()}
    assert "results.json" in modes and "report.md.sha256" in modes
    assert set(modes.values()) == {"0o644"}, modes


def test_a_rebuild_writes_where_asked_and_never_over_a_runs_report_unasked(tmp_path):
    """`distill report RUN --output-dir DIR` leaves RUN's published report as it is; a rebuild into a folder that
    holds a run's trials and its report is refused unless --overwrite."""
    from tests.cli_helpers import assert_one_line_error, run_cli

    run, elsewhere = tmp_path / "published", tmp_path / "rebuilt"
    _write_run(run)
    assert run_cli("report", str(run), cwd=tmp_path).returncode == 0  # a run's first report
    published = {p.name: p.read_bytes() for p in (run / "comparison").iterdir()}
    result = run_cli("report", str(run), "--output-dir", str(elsewhere), "--metrics", "rougeL", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in (run / "comparison").iterdir()} == published
    assert (elsewhere / "comparison" / "results.json").is_file() and not (elsewhere / "trials").exists()
    refused = run_cli("report", str(run), "--metrics", "rougeL", cwd=tmp_path)
    assert_one_line_error(refused, "holds a run's trials and its report", "--output-dir", "--overwrite")
    assert {p.name: p.read_bytes() for p in (run / "comparison").iterdir()} == published
    other = tmp_path / "other-run"
    _write_run(other)
    assert_one_line_error(run_cli("report", str(run), "--output-dir", str(other), cwd=tmp_path), "holds a run's trials")
    assert run_cli("report", str(run), "--metrics", "rougeL", "--overwrite", cwd=tmp_path).returncode == 0
    assert (run / "comparison" / "results.json").read_bytes() != published["results.json"]


def test_the_report_takes_exactly_the_runs_own_trials_and_names_the_others(tmp_path, caplog):
    """A second run into the same folder (fewer methods, or the same trial names with other settings) leaves the
    first run's trial folders there: the report reads the trials run.json lists, with their keys, and names the
    rest as left out. A run.json from before it listed trials still reads every trial."""
    _write_run(tmp_path)
    own = {}
    for name in ("random_s0", "random_s1", "clustering_s0", "clustering_s1"):
        path = tmp_path / "trials" / name / "metrics.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "key": f"key-{name}"}))
        artifacts.seal(path)
        own[name] = f"key-{name}"
    own["clustering_s1"] = "key-of-another-learning-rate"  # the same folder name, trained with other settings
    own["clustering_s2"] = "key-not-run-yet"  # a trial of this run that an interruption left without results
    run = json.loads((tmp_path / "run.json").read_text())
    (tmp_path / "run.json").write_text(json.dumps({**run, "trials": own}))
    artifacts.seal(tmp_path / "run.json")
    with caplog.at_level("WARNING", logger="distill.report.load"):
        rows = build_report(tmp_path, console=_console())
    assert {r["method"]: r["seeds"] for r in rows} == {"random": 2, "clustering": 1}
    assert "left out 7 trial folder(s)" in caplog.text
    assert "clustering_s1" in caplog.text and "full_s0" in caplog.text and "random_s0" not in caplog.text
    assert (
        "2 of this run's 5 trials have no results yet, so the report leaves them out: clustering_s1, clustering_s2"
        in (caplog.text)
    )
    (tmp_path / "run.json").write_text(json.dumps(run))  # version 3: no list of trials
    artifacts.seal(tmp_path / "run.json")
    assert len(build_report(tmp_path, console=_console())) == len(METHODS)


def test_a_methods_time_is_its_own_cost_not_its_wait_and_the_shared_embedding_is_apart(tmp_path):
    """Two trials that did the same work, one of which waited for a CPU (twice the wall seconds): the same time
    in the report, from the CPU seconds each trial measured; the shared embedding pass is named once, apart."""
    _write_run(tmp_path)
    for method in METHODS:
        for seed in (0, 1):
            path = tmp_path / "trials" / f"{method}_s{seed}" / "metrics.json"
            metrics = json.loads(path.read_text())
            waited = 2.0 if method == "clustering" else 1.0
            metrics.update(train_cpu_seconds=8.0, eval_cpu_seconds=2.0, time_s=waited * metrics["time_s"])
            path.write_text(json.dumps(metrics))
            artifacts.seal(path)
    run = json.loads((tmp_path / "run.json").read_text())
    (tmp_path / "run.json").write_text(json.dumps({**run, "embed_seconds": 123.4}))
    artifacts.seal(tmp_path / "run.json")
    rows = {r["method"]: r for r in build_report(tmp_path, console=_console())}
    assert rows["clustering"]["time_s"] == rows["random"]["time_s"] == 1.0 + 8.0 + 2.0  # select + train + eval
    report = (tmp_path / "comparison" / "report.md").read_text()
    assert "embedding pass every method shares took 123.4 s, once" in report


def test_the_report_says_how_many_responses_were_cut_in_training_and_held_out(tmp_path):
    """A response cut at model.max_target_tokens is trained on and scored without its end: the report's setup
    counts them in the pool, per training subset, in the full pool's training set and among the held-out
    references, with the limit and the EOS setting; a run that recorded no counts says nothing of them."""
    _write_run(tmp_path)
    build_report(tmp_path, console=_console())
    assert "responses cut" not in (tmp_path / "comparison" / "report.md").read_text()
    for method in METHODS:
        for seed in (0, 1):
            path = tmp_path / "trials" / f"{method}_s{seed}" / "metrics.json"
            metrics = json.loads(path.read_text())
            train_cut = 37 if method == "full" else 2 + seed
            metrics.update(train_responses_cut=train_cut, heldout_responses_cut=4)
            path.write_text(json.dumps(metrics))
            artifacts.seal(path)
    stats = json.loads((tmp_path / "pool_stats.json").read_text())
    (tmp_path / "pool_stats.json").write_text(json.dumps({**stats, "responses_cut": 37}))
    run = json.loads((tmp_path / "run.json").read_text())
    config = {**run["config"], "model": {"max_target_tokens": 48}, "prompt": {"eos_after_truncated_response": False}}
    (tmp_path / "run.json").write_text(json.dumps({**run, "config": config}))
    for path in (tmp_path / "pool_stats.json", tmp_path / "run.json"):
        artifacts.seal(path)
    build_report(tmp_path, console=_console())
    lines = [line for line in (tmp_path / "comparison" / "report.md").read_text().splitlines() if "cut" in line]
    assert lines == [
        "- **responses cut** at model.max_target_tokens=48 (no EOS after a cut: prompt.eos_after_truncated_response "
        f"false): 37 of the pool's 400; 2–3 per selected training subset; 37 in the full pool's training set; 4 of "
        f"the {N_EX} held-out references"
    ]


def test_a_users_metric_is_tested_against_random_with_its_margin(tmp_path):
    """A metric the run recorded in run.json (eval.metrics) is read from each trial, tested against random and
    judged with its own margin — its means live under user_scores, never as a column."""
    from distill.config.schema import ReportConfig

    _write_run(tmp_path)
    for tdir in (tmp_path / "trials").iterdir():
        lines = [json.loads(line) for line in (tdir / "predictions.jsonl").read_text().splitlines()]
        for p in lines:
            p["exact_answer"] = float(p["rougeL"] > 0.3)
        (tdir / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in lines))
        artifacts.seal(tdir / "predictions.jsonl")
        mean = float(np.mean([p["exact_answer"] for p in lines]))
        _rewrite(tdir / "metrics.json", exact_answer=mean, user_metrics=["exact_answer"])
    recorded = [{"name": "exact_answer", "label": "exact answer", "higher_is_better": True}]
    _rewrite(tmp_path / "run.json", user_metrics=recorded)

    settings = ReportConfig(metrics=["exact_answer"], margins={"exact_answer": 0.05})
    rows = {r["method"]: r for r in build_report(tmp_path, settings, console=_console())}
    test = rows["clustering"]["vs_random"]["exact_answer"]
    assert rows["random"]["user_scores"]["exact_answer"] > 0 and test["diff"] > 0
    assert test["mde_pct"] is not None and test["verdict"] and test["margin"] > 0
