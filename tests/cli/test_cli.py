"""Command line: listing methods, and bad input failing fast with one line and exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.cli_helpers import PYTHON, REPO, assert_one_line_error, cli_env, run_cli


def assert_nothing_heavy_started(result: subprocess.CompletedProcess, out: Path) -> None:
    """Failed before the embedding stage: no Ray cluster, no model, no run files."""
    assert "Ray cluster" not in result.stdout
    assert "target model" not in result.stdout
    assert not (out / "run.json").exists()
    assert not (out / "cache").exists()


def test_methods_lists_the_registry(tmp_path):
    from distill.select import registry

    result = run_cli("methods", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert listed == registry.names()
    assert {"random", "clustering", "d2_pruning"} <= set(listed)


def test_missing_data_file(tmp_path):
    out = tmp_path / "out"
    result = run_cli("quick", "--data", "/nonexistent.jsonl", "--output-dir", str(out), cwd=tmp_path)
    assert_one_line_error(result, "/nonexistent.jsonl", "does not exist")
    assert_nothing_heavy_started(result, out)


def test_bad_input_fails_before_torch_or_ray_is_imported(tmp_path):
    """preflight.check runs before the CLI imports the pipeline: a wrong path costs about a second, not a torch import."""
    probe = (
        "import sys\nfrom distill.cli import main\n"
        "code = main(['quick', '--data', 'missing.jsonl', '--output-dir', 'out'])\n"
        "print(sorted(m for m in ('torch', 'ray', 'transformers') if m in sys.modules))\nsys.exit(code)\n"
    )
    result = subprocess.run(
        [PYTHON, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"},
    )
    assert_one_line_error(result, "missing.jsonl")
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_missing_column(tmp_path):
    data = tmp_path / "docs.jsonl"
    data.write_text(
        "".join(
            json.dumps({"text": f"A document of some length number {i}.", "abstract": "short"}) + "\n"
            for i in range(20)
        )
    )
    out = tmp_path / "out"
    result = run_cli("quick", "--data", str(data), "--output-dir", str(out), cwd=tmp_path)
    assert_one_line_error(result, "'summary'", "abstract", "summary_column")
    assert_nothing_heavy_started(result, out)


def test_unknown_method(tmp_path):
    result = run_cli("quick", "--methods", "random,telepathy", "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert_one_line_error(result, "telepathy", "random")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fraction", ["0", "1.5"])
def test_fraction_outside_range(tmp_path, fraction):
    result = run_cli("quick", "--fraction", fraction, "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert_one_line_error(result, "select.fraction' must be a number in (0, 1]", "--set select.fraction=")
    assert not (tmp_path / "out").exists()


def test_hub_dataset_offline_fails_fast(tmp_path):
    out = tmp_path / "out"
    result = run_cli("quick", "--data", "some/hub-dataset", "--output-dir", str(out), cwd=tmp_path, timeout=60)
    line = assert_one_line_error(result, "some/hub-dataset", "--data")
    assert "local" in line
    assert_nothing_heavy_started(result, out)


def test_set_without_equals(tmp_path):
    result = run_cli("quick", "--set", "notakey", "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert_one_line_error(result, "notakey", "KEY=VALUE")


def test_set_unknown_key(tmp_path):
    result = run_cli("quick", "--set", "train.bogus=1", "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert_one_line_error(result, "train.bogus")


def test_report_on_empty_dir(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("report", str(empty), cwd=tmp_path)
    line = assert_one_line_error(result, str(empty))
    assert "python -m distill" in line  # the fix says how to produce results


def test_bad_subcommand_is_argparse_error(tmp_path):
    result = run_cli("frobnicate", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_version_names_the_package_and_the_git_commit(tmp_path):
    from distill.version import git_commit

    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"distill 0.1.0 (git {git_commit()[:12]})\n"


def test_jobs_lists_every_shipped_job_with_its_description(tmp_path):
    from distill.config.load import JOBS_DIR, make_config

    result = run_cli("jobs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = dict(line.split(maxsplit=1) for line in result.stdout.splitlines())
    assert set(listed) == {p.stem for p in JOBS_DIR.glob("*.yaml")} >= {"quick", "baseline", "all", "scitldr"}
    for name, description in listed.items():
        assert description == make_config(name).description and len(description) > 20


@pytest.mark.parametrize("module", ["distill.quick", "distill.baseline", "distill.all"])
def test_mode_modules_keep_working(tmp_path, module):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [PYTHON, "-m", module, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "--verbose" in result.stdout and "--job" in result.stdout


def test_a_stale_ray_address_is_named_within_seconds(tmp_path):
    """RAY_ADDRESS left over from a cluster that is gone: ray.init waited 240 s in silence, then failed. Now one
    line within 15 s names the address, that it came from RAY_ADDRESS, and the fix; the output folder is untouched."""
    import time

    from tests.clusters import free_port

    address = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    result = subprocess.run(
        [PYTHON, "-m", "distill", "quick", "--output-dir", str(tmp_path / "out")],
        cwd=tmp_path,
        env={**cli_env(tmp_path), "RAY_ADDRESS": address},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.monotonic() - start < 15
    assert_one_line_error(result, address, "from RAY_ADDRESS", "unset RAY_ADDRESS")
    assert not (tmp_path / "out").exists()
