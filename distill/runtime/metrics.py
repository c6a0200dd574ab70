"""distill's own metrics, beside Ray's in the dashboard and in Prometheus: through ray.util.metrics, which every
node's metrics agent exports on its metrics export port (`ray start --metrics-export-port`) as `ray_<name>`, flushed
every few seconds. docs/grafana/distill.json charts them. Every metric carries the run's name (`run` tag), so two
runs on one cluster stay apart; the process that does the work records it (the driver for embedding, selection and
the trial counts, each trial's actor for its step, loss and scoring).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

RUN = "run"  # every metric's tag for distill's run name
# Selection seconds: the selectors range from milliseconds (random) to hours (a million rows of gradients)
SELECT_SECONDS_BOUNDS = [0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0]
TRIAL_STATES = ("pending", "running", "done", "failed")
MIN_SECONDS = 1e-3  # rows/s of a batch that arrives at once: no division by zero


@dataclass(frozen=True)
class Metrics:
    """The metric objects (created once per process: Ray refuses a second definition of a name)."""

    rows_embedded: Any
    embed_rows_per_second: Any
    selections: Any
    select_seconds: Any
    trials: Any
    trial_step: Any
    trial_loss: Any
    heldout_scored: Any


@functools.cache
def metrics() -> Metrics:
    from ray.util.metrics import Counter, Gauge, Histogram

    return Metrics(
        rows_embedded=Counter("distill_rows_embedded", "Pool rows the target model embedded", tag_keys=(RUN,)),
        embed_rows_per_second=Gauge(
            "distill_embed_rows_per_second", "Embedding throughput since the pass started", tag_keys=(RUN,)
        ),
        selections=Counter(
            "distill_selections", "Selections finished, by method and outcome", tag_keys=(RUN, "method", "outcome")
        ),
        select_seconds=Histogram(
            "distill_select_seconds",
            "Seconds one selector took",
            boundaries=SELECT_SECONDS_BOUNDS,
            tag_keys=(RUN, "method"),
        ),
        trials=Gauge("distill_trials", "Trials by state", tag_keys=(RUN, "state")),
        trial_step=Gauge("distill_trial_step", "A trial's optimizer step", tag_keys=(RUN, "trial")),
        trial_loss=Gauge("distill_trial_loss", "A trial's training loss at its last step", tag_keys=(RUN, "trial")),
        heldout_scored=Counter(
            "distill_heldout_scored", "Held-out examples generated and scored", tag_keys=(RUN, "trial")
        ),
    )


def embedded(run: str, rows: int, rows_per_second: float) -> None:
    m = metrics()
    m.rows_embedded.inc(rows, tags={RUN: run})
    m.embed_rows_per_second.set(rows_per_second, tags={RUN: run})


def selected(run: str, method: str, seconds: float | None) -> None:
    """One selection done (`seconds` it took) or failed (None)."""
    m = metrics()
    m.selections.inc(1, tags={RUN: run, "method": method, "outcome": "failed" if seconds is None else "done"})
    if seconds is not None:
        m.select_seconds.observe(seconds, tags={RUN: run, "method": method})


class TrialStates:
    """How many of a run's trials are in each of TRIAL_STATES, kept as Tune reports their moves."""

    def __init__(self, run: str, n_trials: int):
        self.run, self.state = run, {}
        self.counts = dict.fromkeys(TRIAL_STATES, 0) | {"pending": n_trials}
        self._publish()

    def move(self, trial: str, to: str) -> None:
        """`trial` leaves its state (pending at first) for `to`; a retried trial goes back to running."""
        self.counts[self.state.get(trial, "pending")] -= 1
        self.counts[to] += 1
        self.state[trial] = to
        self._publish()

    def _publish(self) -> None:
        for state, count in self.counts.items():
            metrics().trials.set(count, tags={RUN: self.run, "state": state})


def trial_progress(run: str, trial: str, step: int, loss: float) -> None:
    m = metrics()
    m.trial_step.set(step, tags={RUN: run, "trial": trial})
    m.trial_loss.set(loss, tags={RUN: run, "trial": trial})


def scored(run: str, trial: str, examples: int) -> None:
    metrics().heldout_scored.inc(examples, tags={RUN: run, "trial": trial})


class EmbedMeter:
    """Counts embedded rows as their batches arrive at the driver, and the pass's rows/s so far."""

    def __init__(self, run: str):
        self.run, self.rows, self.start = run, 0, time.perf_counter()

    def __call__(self, rows: int) -> None:
        self.rows += rows
        embedded(self.run, rows, self.rows / max(time.perf_counter() - self.start, MIN_SECONDS))
