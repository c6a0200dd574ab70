"""Selection strategies: pure functions behind a registry (registry.py).

Importing this package registers the built-in selectors: each module registers its own on import, and the
registry imports none of them (so the selector modules and the registry never import each other). Selectors
from outside distill come through plugins.py and the registry's entry points.
"""

from distill.select import d2, dynamics, heuristic, semantic, targeted  # noqa: F401  (they register on import)
from distill.select.registry import get, names, register, select

__all__ = ["get", "names", "register", "select"]
