"""The sequential design of an adaptive run (`--until-decided`): when it looks, and at what level each look decides.

A group-sequential design with a fixed maximum of K looks on a fixed schedule of seed counts: look k compares a
method with random on the first s_k = S₁ + (k − 1)·step seeds (S₁ ≥ 2, the first round). After each look only the
methods still undecided get the next `step` seeds (and random with them, paired); the run stops when every method
is decided, at look K, or when the budget is spent. Each look's intervals are at level 1 − α/(m·K) (verdict.py).

Why this is valid under optional stopping (docs/statistics.md derives it): let C_j(s) be method j's interval on its
first s seeds. Whatever the data make the run do, every verdict it reports was read from some C_j(s_k), with s_k on
the fixed schedule; so a wrong verdict anywhere implies that one of the m·K intervals C_j(s_k) missed its truth,
and by Bonferroni that has probability ≤ m·K·α/(m·K) = α. Stopping early, or dropping a decided method, only
removes intervals from that union. The price is the split of α over K looks, fixed before the first one:
scripts/calibrate_sequential.py simulates it on the crossed seeds × examples model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Design:
    """K looks at s_k = first + (k − 1)·step seeds; a run without --until-decided is one look at its seeds."""

    first: int
    step: int = 0
    looks: int = 1

    def seeds_at(self, look: int) -> int:
        """s_k: the seeds a method still undecided at look k − 1 has at look k (look 1: the first round)."""
        return self.first + (look - 1) * self.step

    def usable(self, seeds: int) -> int:
        """The seeds a comparison with `seeds` shared seeds may use: the largest scheduled s_k ≤ seeds.

        A round cut short leaves a method between two looks; reading it at an unscheduled count would be a look the
        level did not pay for. With one look (a fixed design) every seed counts.
        """
        if self.looks == 1 or seeds < self.first:
            return seeds
        return self.seeds_at(min(self.looks, 1 + (seeds - self.first) // self.step))

    def look_of(self, seeds: int) -> int:
        """The look a comparison on `seeds` (scheduled) seeds was read at."""
        return 1 if self.looks == 1 or seeds <= self.first else 1 + (seeds - self.first) // self.step


def of_run(config: dict[str, Any] | None) -> Design:
    """The design a run was started with, from run.json's config mapping (a run from before adaptive runs, or
    without --until-decided, is one look at its seeds)."""
    config = config or {}
    adaptive = config.get("adaptive") or {}
    seeds = int(config.get("seeds") or 1)
    if not adaptive.get("enabled"):
        return Design(seeds)
    return Design(seeds, int(adaptive["seeds_per_look"]), int(adaptive["looks"]))
