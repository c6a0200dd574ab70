"""Importing distill does nothing but define things: no environment variable written, no log handler added, no
file descriptor moved. The entry points set a process up (distill/process.py): the CLI in the driver, Ray's
worker setup hook in each worker."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from distill.config.schema import ResourcesConfig

# Imports every distill module (the libraries they use first, so that what those do on import is not counted)
# and reports what changed: the environment, distill's loggers' handlers, the root logger, file descriptor 2.
PROBE = """
import importlib, json, logging, os, pkgutil
import faiss, numpy, ray, ray.tune, torch, transformers
env, root, fd2 = dict(os.environ), list(logging.getLogger().handlers), os.fstat(2)
import distill
names = [m.name for m in pkgutil.walk_packages(distill.__path__, "distill.")]
for name in names:
    if not name.endswith("__main__"):
        importlib.import_module(name)
loggers = logging.Logger.manager.loggerDict
print(json.dumps({
    "modules": len(names),
    "env": sorted(k for k, v in os.environ.items() if env.get(k) != v),
    "handlers": sorted(n for n, lg in loggers.items() if n.startswith("distill") and getattr(lg, "handlers", None)),
    "root": len(logging.getLogger().handlers) - len(root),
    "fd2": os.fstat(2).st_ino != fd2.st_ino,
}))
"""


def test_importing_every_distill_module_changes_nothing():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_USAGE_STATS_ENABLED", "OMP_WAIT_POLICY")}
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "1"  # a user's own setting: no import may touch it either
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.splitlines()[-1])
    assert found["modules"] > 50
    assert found == {"modules": found["modules"], "env": [], "handlers": [], "root": 0, "fd2": False}


def test_the_cli_sets_the_process_up(tmp_path):
    """`distill methods` (an entry point, nothing run) in a clean environment: the console is attached and the
    Ray defaults are set before anything could import Ray."""
    code = (
        "import logging, os, sys; from distill.cli import main; main(['methods']);"
        "print([type(h).__name__ for h in logging.getLogger('distill').handlers], os.environ.get('RAY_USAGE_STATS_ENABLED'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_USAGE_STATS_ENABLED"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "['ConsoleHandler'] 0"


@pytest.mark.slow
def test_a_ray_worker_logs_through_the_console_without_importing_the_cli():
    """A worker never imports the CLI: ray_session names distill.process.setup as its setup hook."""
    import ray

    from distill.runtime.session import ray_session

    def handlers() -> list[str]:
        return [type(h).__name__ for h in logging.getLogger("distill").handlers]

    with ray_session(ResourcesConfig(num_cpus=1)):
        in_worker = ray.get(ray.remote(num_cpus=1)(handlers).remote())
    assert in_worker == ["ConsoleHandler"]
