"""The comparison table on the terminal, fitted to its width: 80 columns keep every column, stacked under its
parent when narrow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from distill.report.rows import generated
from distill.report.text import _better, _fmt, _p_value, _pct, _primary_label, primary
from distill.store.records import HELDOUT_LOSS, ROUGE_L, Metric


@dataclass(frozen=True)
class ConsoleColumn:
    """One column of the terminal table. `under` names the column it is stacked beneath when the
    terminal is too narrow for one column each; a new column (e.g. an MDE) is one more entry here."""

    header: str
    cell: Callable[[dict], str]
    under: str | None = None


def _console_p(row: dict) -> str:
    test = (primary(row) or (None, None))[1]
    if test is None or test["p_holm"] is None:
        return "—"
    return _p_value(test["p_holm"]) + ("†" if test["significant"] is None else "" if test["significant"] else " ns")


def _beats_random(row: dict) -> bool:
    """Better than random on the primary metric: its verdict (a row from before verdicts: its Holm test)."""
    found = primary(row)
    if found and found[1].get("verdict") is not None:
        return found[1]["verdict"] == "better"
    return bool(found and found[1]["significant"] and _better(found[1], found[0]))


def _console_verdict(row: dict) -> str:
    """The primary metric's verdict (docs/statistics.md, Verdicts), "—" for random, full and one-seed rows."""
    test = (primary(row) or (None, None))[1]
    found = test and test.get("verdict")
    return "—" if found in (None, "no claim") else "equiv." if found == "equivalent" else found


def _score_columns(metric: Metric) -> tuple[ConsoleColumn, ConsoleColumn]:
    """A metric's mean and, stacked beneath it when narrow, its 95% CI."""
    header, ci = metric.label, f"{metric.name}_ci95"
    return (
        ConsoleColumn(header, lambda r: _fmt(r[metric.name])),
        ConsoleColumn("95% CI", lambda r: f"{r[ci][0]:.3f}–{r[ci][1]:.3f}" if r[ci] else "—", under=header),
    )


_METHOD = ConsoleColumn("Method", lambda r: r["method"])
_COST = (
    ConsoleColumn("Samples", lambda r: str(r["samples"])),
    ConsoleColumn("Seeds", lambda r: str(r["seeds"]), under="Samples"),
    ConsoleColumn("Time (s)", lambda r: _fmt(r["time_s"], ".1f")),
)
CONSOLE_COLUMNS = (
    _METHOD,
    *_score_columns(ROUGE_L),
    ConsoleColumn("BERTScore", lambda r: _fmt(r["bertscore_f1"])),
    ConsoleColumn(
        "% of full", lambda r: "—" if r["pct_of_full"] is None else f"{r['pct_of_full']:.1f}%", under="BERTScore"
    ),
    ConsoleColumn("vs random", lambda r: _pct(r["vs_random_pct"])),
    ConsoleColumn("p (Holm)", _console_p, under="vs random"),
    ConsoleColumn("Verdict", _console_verdict, under="vs random"),
    *_COST,
)
# a run that scored held-out loss alone (eval.generate false): no ROUGE-L, BERTScore or share of the full ROUGE-L
LOSS_COLUMNS = (
    _METHOD,
    *_score_columns(HELDOUT_LOSS),
    ConsoleColumn("p (Holm)", _console_p),
    ConsoleColumn("Verdict", _console_verdict, under="p (Holm)"),
    *_COST,
)


MEASURE_WIDTH = 10_000


def console_table(rows: list[dict], width: int, columns: tuple[ConsoleColumn, ...] | None = None):
    """The comparison as a rich Table no wider than `width` if possible, never dropping a column:
    one column each when it fits, else every `under` column stacked beneath its parent. The columns: ROUGE-L's,
    or held-out loss's in a run that did not generate."""
    if columns is None:
        columns = CONSOLE_COLUMNS if generated(rows) else LOSS_COLUMNS
    from rich.console import Console

    wide = [[c] for c in columns]
    stacked = [[c, *(d for d in columns if d.under == c.header)] for c in columns if c.under is None]
    unbounded = Console(width=MEASURE_WIDTH)  # measures the table's natural width (a narrower console clamps it)
    for layout in (wide, stacked):
        table = _layout_table(rows, layout)
        if unbounded.measure(table).maximum <= width:
            break
    return table


def _layout_table(rows: list[dict], layout: list[list[ConsoleColumn]]):
    """A table whose column i shows the cells of layout[i], one per line."""
    from rich import box
    from rich.table import Table

    table = Table(
        title="Method comparison",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        caption=f"p: {_primary_label(rows)} vs random over seeds × examples, Holm-adjusted; ns = not "
        "significant (p ≥ 0.05); † = one seed: per-example test only, no claim; verdict: from intervals "
        "simultaneous over every test (report.md), equiv. = within ±δ of random",
    )
    for i, group in enumerate(layout):
        table.add_column("\n".join(c.header for c in group), justify="left" if i == 0 else "right", no_wrap=True)
    for r in rows:
        table.add_row(
            *["\n".join(c.cell(r) for c in group) for group in layout],
            style="bold green" if _beats_random(r) else None,
            end_section=len(layout[1]) > 1,
        )
    return table


def print_table(rows: list[dict], console=None) -> None:
    """The comparison table on the terminal, fitted to its width (80 columns keep every column)."""
    from rich.console import Console

    console = console or Console()
    console.print(console_table(rows, console.width))
