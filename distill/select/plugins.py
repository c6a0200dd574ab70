"""Selectors from outside distill: plugin files and importable modules (installed entry points: registry.py).

A user brings a selector without touching distill: `--plugin my_selectors.py` (repeatable), the job key
`select.plugins: [my_selectors.py, my_pkg.selectors]`, or a package that declares the entry-point group
`distill.selectors`. Each plugin registers its functions with `distill.select.register`, exactly like the
built-ins, so they pass the same checks and appear in `python -m distill methods`.

Why plugin files travel as source text: selection runs as Ray tasks, possibly on another node where the
user's file does not exist at the driver's path. The driver reads each file once (`load`) and hands the
resulting `Plugin` records to every task, which runs the same source (`install`) before selecting, under the
file's own name so tracebacks still point at it. Modules and entry points are imported by name: they must be
installed (or on PYTHONPATH / in the job's working_dir) wherever the task runs.

Every way a plugin can be broken (missing file, syntax error, failing import, wrong signature, a name that
clashes with a built-in, no selector at all) is a one-line DistillError naming the file and the problem.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import sys
import types
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from distill.errors import DistillError, describe
from distill.select import registry

METRIC_MARK = "__distill_metric__"  # the attribute distill.trial.metrics.metric puts on the functions it registers
MODULE_PREFIX = "distill_plugin_"  # namespace of plugin files in sys.modules (never importable by name)


@dataclass(frozen=True)
class Plugin:
    """One plugin as a Ray task receives it: a module name, or a file's path and source text."""

    spec: str  # as the user wrote it
    module: str  # the sys.modules name its selectors register under
    path: str | None = None  # absolute path of a plugin file (None for a module)
    source: str | None = None  # the file's text, read once on the driver


def resolve(spec: str) -> Plugin:
    """A --plugin value → Plugin: a path ending in .py (relative to the current directory) or a module name. A module
    whose file is in the current folder is found there first, as `python -m` finds it (the `distill` command's
    own path does not hold that folder), and travels to the Ray workers as source text like a file: a worker
    elsewhere could not import it, and its clashes and signatures are checked here, when it loads."""
    if spec.endswith(".py") or "/" in spec:
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise DistillError(
                f"plugin file {spec} not found (looked at {path})",
                "pass an existing .py file to --plugin / select.plugins (relative paths are read "
                "from the current directory)",
            )
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DistillError(f"plugin file {path} cannot be read ({exc})", "pass a readable UTF-8 .py file") from None
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
        return Plugin(spec, f"{MODULE_PREFIX}{_identifier(path.stem)}_{digest}", str(path), source)
    if not all(part.isidentifier() for part in spec.split(".")):
        raise DistillError(
            f"plugin '{spec}' is neither a .py file nor a module name",
            "pass a path such as my_selectors.py or a module such as my_pkg.selectors",
        )
    here = Path.cwd() / f"{spec.replace('.', '/')}.py"
    if here.is_file():  # `python -m`'s rule: the current folder comes first; shipped as source, as a file is
        return dataclasses.replace(resolve(str(here)), spec=spec)
    return Plugin(spec, spec)


def load(specs: Iterable[str]) -> list[Plugin]:
    """Resolve and import the plugins of a job (on the driver); returns them for shipping to Ray tasks."""
    plugins = [resolve(spec) for spec in specs]
    install(plugins)
    return plugins


def install(plugins: Iterable[Plugin]) -> None:
    """Import plugins resolved by `load`: on the driver, and in each Ray task before it selects.

    Built-ins and entry points are registered first, so a clash is reported against the plugin.
    Importing again is harmless: the same module re-registering a name replaces its own entry.
    """
    registry.names()  # loads the built-ins and the entry points
    for plugin in plugins:
        if plugin.source is not None:
            _exec_file(plugin)
        else:
            _import_module(plugin)
        if not registry.from_module(plugin.module) and not _defines_metrics(plugin.module):
            raise DistillError(
                f"plugin {plugin.path or plugin.spec} registers no selector and no metric",
                'decorate each selector with @register("name", description=...) from distill.select, or each '
                'metric with @metric("name", higher_is_better=...) from distill.trial.metrics',
            )


def _defines_metrics(module: str) -> bool:
    """Whether `module` registered one of your metrics (distill/trial/metrics.py marks each with METRIC_MARK)."""
    return any(hasattr(value, METRIC_MARK) for value in vars(sys.modules.get(module, types.ModuleType("-"))).values())


def _exec_file(plugin: Plugin) -> None:
    """Run a plugin file's source as module `plugin.module`, compiled under its own path."""
    try:
        code = compile(plugin.source, plugin.path, "exec")
    except SyntaxError as exc:
        raise DistillError(
            f"plugin {plugin.path} has a syntax error at line {exc.lineno}: {exc.msg}",
            "fix the file (python -m py_compile shows the spot)",
        ) from None
    module = types.ModuleType(plugin.module)
    module.__file__ = plugin.path
    sys.modules[plugin.module] = module  # dataclasses and pickling look the module up by name
    try:
        exec(code, module.__dict__)
    except DistillError:
        raise
    except Exception as exc:
        del sys.modules[plugin.module]
        raise DistillError(
            f"plugin {plugin.path} failed to import: {describe(exc)}",
            f"run `python {plugin.path}` to see the full traceback",
        ) from None


def _import_module(plugin: Plugin) -> None:
    try:
        importlib.import_module(plugin.module)
    except DistillError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and f"{plugin.module}.".startswith(f"{exc.name}."):  # the plugin itself, not what it imports
            raise DistillError(
                f"plugin module '{plugin.module}' not found",
                "install it, put its folder on PYTHONPATH, or pass the path of the .py file",
            ) from None
        raise DistillError(
            f"plugin module '{plugin.module}' failed to import: {describe(exc)}",
            "install what it imports or fix the module",
        ) from None
    except Exception as exc:
        raise DistillError(
            f"plugin module '{plugin.module}' failed to import: {describe(exc)}",
            f"fix the module (python -c 'import {plugin.module}' shows the traceback)",
        ) from None


def _identifier(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)
