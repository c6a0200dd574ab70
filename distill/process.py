"""What every distill process sets up before its work, in one place and never on import: the command line calls
`setup()` first (the driver), and `distill.runtime.session.ray_session` names it as each Ray worker's setup hook
(workers import distill modules but never the CLI). Importing distill changes no environment variable and adds
no log handler (tests/project/test_import_effects.py).
"""

from __future__ import annotations

import os

# Read by libraries when they load, so they are set before those are imported; setdefault: a user's own wins.
ENVIRONMENT = {
    # Ray, when imported: a local cluster binds 127.0.0.1 only (without this, Ray rewrites 127.0.0.1 to the
    # machine's external address) ...
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # ... and sends no usage stats.
    "RAY_USAGE_STATS_ENABLED": "0",
}  # (faiss' OMP_WAIT_POLICY is set where faiss is loaded, on first use: distill.select.neighbors.load_faiss)
WORKER_SETUP = "distill.process.setup"  # ray.init's runtime_env worker_process_setup_hook: each worker calls it


def set_environment() -> None:
    """ENVIRONMENT's defaults in this process's environment (the libraries not yet loaded read them)."""
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def setup() -> None:
    """A distill process's setup: the environment defaults, and the console as the handler of the `distill`
    logger (distill.console.run.attach: distill's log lines on the run's console, or a worker's stdout)."""
    from distill.console import run as console

    set_environment()
    console.attach()
