"""How many CPUs each trial gets: no core sits idle while the last trials run.

Tune runs trials in queue order, `concurrent` at a time. When the trial count is not a multiple of
that, the last round holds fewer trials than the machine has room for, and with a fixed
`cpus_per_trial` the rest of the CPUs idle (5 trials on 2 cores at 1 CPU each: the fifth runs
alone on one core). Planning the queue up front fixes it without any runtime coordination: the
trials of the last round split the CPUs a full round uses, and torch uses that many threads.
"""

from __future__ import annotations

import math


def trial_cpus(
    n_trials: int, cpus: float, cpus_per_trial: float, max_concurrent: int | None = None, node_cpus: float | None = None
) -> list[float]:
    """CPUs per trial in queue order: `cpus_per_trial` each, except the last round's trials, which
    share the CPUs of a full round (whole CPUs, at most one node's worth, never less than asked)."""
    concurrent = max(1, math.floor(cpus / cpus_per_trial))
    if max_concurrent:
        concurrent = min(concurrent, max_concurrent)
    tail = n_trials % concurrent
    if tail == 0:
        return [cpus_per_trial] * n_trials
    share = math.floor(concurrent * cpus_per_trial / tail)
    share = max(cpus_per_trial, min(share, node_cpus or share))
    return [cpus_per_trial] * (n_trials - tail) + [share] * tail
