"""Running `python -m distill` as the user does, and checking its one-line errors: shared by the CLI tests and
every other folder's tests that go through the command line (tests/cli/test_cli.py tests the CLI itself)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable


def cli_env(folder: Path) -> dict[str, str]:
    """The environment of a `python -m distill` subprocess: offline, this checkout, caches under `folder`, and no
    RAY_ADDRESS (each run starts its own local cluster)."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": str(REPO),
        "DISTILL_CACHE_DIR": str(folder / "cache"),
    }
    env.pop("RAY_ADDRESS", None)
    return env


def run_cli(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = cli_env(cwd)
    return subprocess.run(
        [PYTHON, "-m", "distill", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("distill: error:")]
    assert len(errors) == 1, result.stderr
    assert "fix:" in errors[0]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]
