"""The selector registry: one decorator turns a pure function into a runnable method.

A selector is `fn(features, k, seed, **params) -> indices`. The decorator records its name,
a one-line description, the features it needs and its cost class; the CLI (`distill methods`),
the pipeline, the README table and the parametrised test matrix all read this registry, so a
new method is one function plus one decorator. The built-in selector modules register when the
distill.select package is imported (this module imports none of them); the installed packages' entry points
(`distill.selectors` group) on the first lookup; plugin files and modules through the same decorator (plugins.py).
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from distill.errors import DistillError, describe
from distill.features.columns import Features

SelectorFn = Callable[..., np.ndarray]
ENTRY_POINT_GROUP = "distill.selectors"


@dataclass(frozen=True)
class Selector:
    name: str
    fn: SelectorFn
    description: str
    needs: tuple[str, ...]  # Features attributes that must be present, e.g. ("embeddings",)
    cost: str  # cost class in n (pool size), e.g. "O(n)", "O(n log n)", "O(n·k_nn·d)"
    reference: str


_REGISTRY: dict[str, Selector] = {}


def register(
    name: str, *, description: str, needs: tuple[str, ...] = (), cost: str = "O(n)", reference: str = ""
) -> Callable[[SelectorFn], SelectorFn]:
    """Decorator: register `fn` under `name`."""

    def wrap(fn: SelectorFn) -> SelectorFn:
        _check_signature(name, fn)
        known = _REGISTRY.get(name)
        # the same module registering again is a reload (a Ray worker reused for the next task), not a clash
        if known is not None and known.fn.__module__ != getattr(fn, "__module__", None):
            kind = "built-in" if known.fn.__module__.startswith("distill.") else "already registered"
            raise DistillError(
                f"selector '{name}' in {source_file(fn)} clashes with the {kind} selector '{name}' "
                f"in {source_file(known.fn)}",
                f'rename it, e.g. @register("my_{name}", ...)',
            )
        _REGISTRY[name] = Selector(name, fn, description, needs, cost, reference)
        return fn

    return wrap


def source_file(fn: Any) -> str:
    """The file a selector was defined in (plugin errors name it)."""
    code = getattr(fn, "__code__", None)
    return code.co_filename if code is not None else repr(fn)


def _check_signature(name: str, fn: Any) -> None:
    """Fail at registration, not an hour later in a Ray task: `fn(features, k, seed)` must be a valid call."""
    fix = "define it as def fn(features, k, seed, **params) -> indices (extra parameters need defaults)"
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        raise DistillError(f"selector '{name}' in {source_file(fn)} is not a function: {fn!r}", fix) from None
    try:
        signature.bind(None, 1, 0)
    except TypeError:
        raise DistillError(
            f"selector '{name}' in {source_file(fn)} has the wrong signature "
            f"{getattr(fn, '__name__', name)}{signature}: it must accept (features, k, seed) and "
            "give every other parameter a default",
            fix,
        ) from None


def names() -> list[str]:
    _load_installed()
    return sorted(_REGISTRY)


def get(name: str) -> Selector:
    _load_installed()
    if name not in _REGISTRY:
        raise DistillError(
            f"unknown selection method '{name}'",
            f"use one of: {', '.join(sorted(_REGISTRY))} (see `python -m distill methods`)",
        )
    return _REGISTRY[name]


def needs_of(methods: list[str]) -> set[str]:
    """Every feature the given methods read (their `needs`): the pipeline computes only these."""
    return {need for method in methods for need in get(method).needs}


def select(name: str, features: Features, k: int, seed: int, **params: Any) -> np.ndarray:
    """Run a registered selector with its input checks; returns sorted unique int64 indices."""
    selector = get(name)
    n = len(features)
    if not 1 <= k <= n:
        raise DistillError(
            f"cannot select k={k} of n={n} examples with '{name}'",
            "choose a budget with 1 <= k <= pool size (--fraction in (0, 1])",
        )
    for need in selector.needs:
        value = getattr(features, need)
        if value is None:
            raise DistillError(
                f"method '{name}' needs feature '{need}', which was not computed",
                "run it through the pipeline (which embeds with the target model) or pass the feature",
            )
        if not np.all(np.isfinite(value)):
            raise DistillError(
                f"feature '{need}' holds NaN or infinite values; '{name}' cannot rank them",
                "check the model's dtype (fp16 overflow?) and recompute the embeddings",
            )
    where = f"selector '{name}' ({source_file(selector.fn)})"
    try:
        returned = selector.fn(features, k, seed, **params)
    except DistillError:
        raise  # a selector's own refusal already names the problem and the fix
    except Exception as exc:  # the selector's bug: one line here, its traceback in the chained exception
        raise DistillError(
            f"{where} raised {describe(exc)}",
            f"fix {getattr(selector.fn, '__name__', name)} or drop '{name}' from select.methods",
        ) from exc
    problem = _problem(returned, k, n)
    if problem:
        raise DistillError(
            f"{where} {problem}",
            f"return {k} distinct integer indices into the pool (0 to {n - 1}), e.g. np.argsort(scores)[:k]",
        )
    return np.sort(np.asarray(returned, dtype=np.int64))


def _problem(returned: Any, k: int, n: int) -> str | None:
    """What is wrong with a selector's answer, in words (None: k distinct indices into the pool). Built-in and
    plugin selectors alike go through it: the pipeline trains on whatever it lets through."""
    try:
        indices = np.asarray(returned)
    except ValueError:  # e.g. a ragged list of lists
        return f"returned a ragged {type(returned).__name__}, not a flat list of indices"
    if indices.ndim == 1 and indices.size == 0:
        return f"returned no indices, expected k={k}"
    if indices.dtype.kind not in "iu":
        what = "None" if returned is None else type(returned).__name__
        return (
            f"returned {what}" + (f" of {indices.dtype}" if indices.dtype != object else "") + ", not integer indices"
        )
    if indices.ndim != 1:
        return f"returned an array of shape {indices.shape}, not a flat list of indices"
    outside = indices[(indices < 0) | (indices >= n)]
    if outside.size:
        return f"returned index {outside[0]} for a pool of {n}"
    values, counts = np.unique(indices, return_counts=True)
    if (counts > 1).any():
        value, count = values[counts > 1][0], counts[counts > 1][0]
        return f"returned index {value} " + ("twice" if count == 2 else f"{count} times")
    if len(indices) != k:
        return f"returned {len(indices)} indices, expected k={k}"
    return None


def from_module(module: str) -> list[str]:
    """Names of the selectors a module registered (a plugin that registers none is a mistake)."""
    return sorted(name for name, sel in _REGISTRY.items() if sel.fn.__module__ == module)


@functools.cache
def _load_installed() -> None:
    """Import the installed `distill.selectors` entry points, once. The built-in selectors registered themselves
    when distill.select was imported (its __init__ imports their modules, before anything here runs), so they come
    first and a clashing plugin is the one named in the error."""
    load_entry_points()


def load_entry_points() -> None:
    """Import every installed package's `distill.selectors` entry point (each names a module whose
    selectors register themselves on import)."""
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        package = ep.dist.name if ep.dist else "an installed package"
        where = f"entry point '{ep.name} = {ep.value}' of {package}"
        try:
            ep.load()
        except DistillError:
            raise  # registration errors already name the file and the problem
        except Exception as exc:
            raise DistillError(
                f"{where} failed to import: {describe(exc)}", f"fix or uninstall {package} (`pip uninstall {package}`)"
            ) from None
        if not from_module(ep.module):
            raise DistillError(
                f"{where} registers no selector",
                "its module must decorate selectors with @register(...) from distill.select",
            )
