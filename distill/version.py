"""Where this code comes from: the package version and, in a git checkout, the commit; and what it runs with: the
lock file the environment was built from and the versions of the packages that shape a result.

`distill --version` prints the first two, and run.json records all of them, so a result can be traced to
the code and environment that produced it. An installed wheel is not a checkout: its commit is None, not a guess.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import distill

PACKAGE_DIR = Path(distill.__file__).resolve().parent


def git_commit() -> str | None:
    """HEAD of the checkout this package is imported from; None when the package is not tracked by git."""
    try:
        tracked = _git("ls-files", "--error-unmatch", "__init__.py")
        return _git("rev-parse", "HEAD") or None if tracked is not None else None
    except (OSError, subprocess.SubprocessError):
        return None


def _git(*args: str) -> str | None:
    result = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=PACKAGE_DIR)
    return result.stdout.strip() if result.returncode == 0 else None


def package_version() -> str:
    """The installed distribution's version, or the source tree's when running from a checkout."""
    try:
        return version("distill")
    except PackageNotFoundError:
        return distill.__version__


def describe() -> str:
    commit = git_commit()
    return f"distill {package_version()} (git {commit[:12] if commit else 'unknown: not a git checkout'})"


TRACKED_PACKAGES = (
    "distill",
    "ray",
    "torch",
    "transformers",
    "peft",
    "datasets",
    "faiss-cpu",
    "rouge-score",
    "bert-score",
    "numpy",
    "pandas",
)


def lock_hash() -> str | None:
    """sha256 of the lock file scripts/setup.sh built this environment from (None for any other install)."""
    record = Path(sys.prefix) / ".distill-lock"  # `sha256sum <lock>`, written by setup.sh
    return record.read_text().split()[0] if record.exists() else None


def _versions() -> dict[str, str]:
    found = {}
    for name in TRACKED_PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found
