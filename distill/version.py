"""Where this code comes from: the package version and, in a git checkout, the commit.

`distill --version` prints both, and run.json records the commit, so a result can be traced to
the code that produced it. An installed wheel is not a checkout: its commit is None, not a guess.
"""

from __future__ import annotations

import subprocess
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
