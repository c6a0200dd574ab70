"""`--until-decided`: after the first round, more seeds only for the methods still undecided, look after look.

The design (distill/report/sequential.py: the looks, the schedule, why the report's level survives stopping at any
of them) is fixed by the config before the first look. Each look adds the next `seeds_per_look` seeds to every method
whose verdict on any tested metric is *undecided*, and to random with them (the pairs of the comparison), as new
(method, seed) selections and trials of the same run: content-hashed, so `distill resume` of an interrupted run
reuses every finished one, and recomputes the same verdicts from the same stored trials, so it continues with the
same looks. No round starts that would take the run past `adaptive.max_trials`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from distill import faults
from distill.config.schema import AdaptiveConfig
from distill.report.sequential import Design
from distill.report.verdict import UNDECIDED
from distill.store.records import RANDOM

log = logging.getLogger(__name__).info  # on the console through distill.console.run.ConsoleHandler


def design_of(seeds: int, adaptive: AdaptiveConfig) -> Design:
    """The looks of a run that starts with `seeds` seeds per method."""
    return Design(seeds, adaptive.seeds_per_look, adaptive.looks)


def undecided(rows: list[dict]) -> list[str]:
    """The methods with an *undecided* verdict on any tested metric, in the report's order."""
    return [r["method"] for r in rows if any(t.get("verdict") == UNDECIDED for t in (r["vs_random"] or {}).values())]


def next_round(design: Design, look: int, rows: list[dict]) -> list[tuple[str, int]]:
    """The (method, seed) trials of `look`: its new seeds for random and for each method still undecided."""
    open_methods = undecided(rows)
    if not open_methods:
        return []
    seeds = range(design.seeds_at(look - 1), design.seeds_at(look))
    return [(method, seed) for method in [RANDOM, *open_methods] for seed in seeds]


def until_decided(
    adaptive: AdaptiveConfig,
    seeds: int,
    first_round: int,
    rows: list[dict],
    run_round: Callable[[list[tuple[str, int]]], None],
    report: Callable[[], list[dict]],
) -> list[dict]:
    """Looks 2..K: run the next round of trials (`run_round`) and rebuild the report (`report`) until every method is
    decided, the last look is taken, or the next round would pass the budget (adaptive.max_trials). `seeds`: the
    seeds of look 1; `first_round`: its trials. Returns the last report's rows."""
    design, budget = design_of(seeds, adaptive), adaptive.max_trials
    spent = first_round  # counted from the schedule, not from disk: a resumed run counts the same
    for look in range(2, design.looks + 1):
        pairs = next_round(design, look, rows)
        if not pairs:
            log(f"every method is decided after look {look - 1} of {design.looks}")
            return rows
        if budget is not None and spent + len(pairs) > budget:
            log(f"look {look} needs {len(pairs)} more trial(s): past the budget of {budget} ({spent} spent); stopping")
            return rows
        methods = sorted({m for m, _ in pairs} - {RANDOM})
        log(
            f"look {look} of {design.looks}: seeds to {design.seeds_at(look)} for {len(methods)} undecided: {', '.join(methods)}"
        )
        faults.inject("adaptive_look", look, "driver")
        run_round(pairs)
        spent += len(pairs)
        rows = report()
    log(f"the last look ({design.looks}) is taken: {len(undecided(rows))} method(s) stay undecided")
    return rows
