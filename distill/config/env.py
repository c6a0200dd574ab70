"""What a run reads from its environment: secrets (read, never logged or stored) and the machine-wide cache
folder. The only module that reads the environment."""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import dotenv_values


def cache_root() -> Path:
    """Machine-wide cache (converted models): $DISTILL_CACHE_DIR or ~/.cache/distill."""
    return Path(os.environ.get("DISTILL_CACHE_DIR", Path.home() / ".cache" / "distill")).expanduser()


def secret(name: str) -> str | None:
    """Read a secret (HF_TOKEN, WANDB_API_KEY) from the environment or ./.env; never log it."""
    return os.environ.get(name) or dotenv_values(".env").get(name) or None
