"""Selectors that read text statistics only (no model features)."""

from __future__ import annotations

import numpy as np

from distill.features import Features
from distill.select.registry import register


@register("random", description="Uniform sample without replacement: the baseline every method must beat.",
          cost="O(n)", reference="—")
def random_subset(features: Features, k: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(len(features), size=k, replace=False)
