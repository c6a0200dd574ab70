"""Selection strategies: pure functions behind a registry (see registry.py)."""

from distill.select.registry import get, names, register, select

__all__ = ["get", "names", "register", "select"]
