"""The report's plots (PNG, without a version stamp so they stay stable across upgrades): forest plots of the
differences from random, cost vs score, prompt lengths of each selection.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distill.report.text import _better, _tests
from distill.store import artifacts
from distill.store.records import FULL, RANDOM, Metric


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_PNG_META = {"Software": None}  # no matplotlib version stamp: plots stay stable across upgrades
LEGEND_ROOM = 0.35  # inches kept below a plot for a one-line figure legend


def plot_forest(rows: list[dict], metric: Metric, path: Path) -> None:
    """Each tested method's difference from random on `metric` with its 95% CI (what the test tests), over a
    shaded band of ± its MDE around zero: a difference inside the band is one this run cannot tell from noise.

    Colours: better / worse than random (significant after Holm), not significant; hollow: one seed, no claim.
    """
    plt = _plt()
    tests = _tests(rows, metric)
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.5 * len(tests) + 1.6)))
    for y, (_, t) in enumerate(reversed(tests)):
        if t["mde"] is not None:
            ax.fill_betweenx([y - 0.35, y + 0.35], -t["mde"], t["mde"], color="0.88", linewidth=0)
        colour = ("tab:green" if _better(t, metric) else "tab:red") if t["significant"] else "tab:blue"
        lo, hi = t["ci95"] if t["ci95"] else (t["diff"], t["diff"])
        ax.errorbar(
            t["diff"],
            y,
            xerr=[[t["diff"] - lo], [hi - t["diff"]]],
            fmt="o",
            capsize=4,
            color=colour,
            markerfacecolor="white" if t["significant"] is None else colour,
        )
    ax.axvline(0.0, color="black", linewidth=1)
    ax.set_yticks(range(len(tests)), [r["method"] for r, _ in reversed(tests)])
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig.legend(
        handles=[
            Line2D([], [], marker="o", linestyle="", color=c, label=label)
            for c, label in (
                ("tab:green", "better than random (Holm)"),
                ("tab:red", "worse than random (Holm)"),
                ("tab:blue", "not significant"),
            )
        ]
        + [Patch(color="0.88", label="± MDE (80% power)")],
        loc="lower center",
        ncol=4,
        fontsize=7,
        frameon=False,
    )
    direction = "higher" if metric.higher_is_better else "lower"
    ax.set_xlabel(f"method − random ({direction} is better): mean over seeds × examples, 95% CI")
    one_seed = any(t["significant"] is None for _, t in tests)
    ax.set_title(f"{metric.label}: difference from random" + (" (hollow: one seed, no claim)" if one_seed else ""))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout(rect=(0, LEGEND_ROOM / fig.get_figheight(), 1, 1))
    artifacts.write(path, lambda fh: fig.savefig(fh, format="png", dpi=110, metadata=_PNG_META))
    plt.close(fig)


def plot_cost(rows: list[dict], path: Path) -> bool:
    """ROUGE-L vs cost per method: GPU-seconds when any trial used a GPU, else wall seconds. Draws nothing (and
    returns False) when no method has both, e.g. a run that did not generate: an empty plot is no result."""
    use_gpu = any((r["gpu_seconds"] or 0) > 0 for r in rows)
    key, label = ("gpu_seconds", "GPU-seconds per seed") if use_gpu else ("time_s", "wall time per seed (s)")
    if not any(r[key] is not None and r["rougeL"] is not None for r in rows):
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    xs = [r[key] for r in rows if r[key] is not None and r[key] > 0]
    ys = [r["rougeL"] for r in rows if r["rougeL"] is not None]
    x_span = (max(xs) - min(xs)) if xs else 0.0
    y_span = (max(ys) - min(ys)) if ys else 0.0
    x_span, y_span = x_span or 1.0, y_span or 1.0
    placed: list[tuple[float, float]] = []
    for r in rows:
        if r[key] is None or r["rougeL"] is None:
            continue
        ci = r["rougeL_ci95"]
        yerr = [[r["rougeL"] - ci[0]], [ci[1] - r["rougeL"]]] if ci else None
        marker = "s" if r["method"] == FULL else "D" if r["method"] == RANDOM else "o"
        ax.errorbar(r[key], r["rougeL"], yerr=yerr, fmt=marker, capsize=3)
        # Stack the labels of points that nearly coincide (same cost and score) so each stays legible.
        near = sum(1 for x, y in placed if abs(x - r[key]) <= 0.03 * x_span and abs(y - r["rougeL"]) <= 0.03 * y_span)
        placed.append((r[key], r["rougeL"]))
        ax.annotate(
            r["method"], (r[key], r["rougeL"]), textcoords="offset points", xytext=(6, 4 - 11 * near), fontsize=8
        )
    if xs and max(xs) / min(xs) > 10:
        ax.set_xscale("log")  # subsets and the full baseline differ by orders of magnitude
    ax.set_xlabel(label)
    ax.set_ylabel("ROUGE-L")
    ax.set_title("Score vs cost")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    artifacts.write(path, lambda fh: fig.savefig(fh, format="png", dpi=110, metadata=_PNG_META))
    plt.close(fig)
    return True


def plot_lengths(lengths: dict[str, list[int]], pool: list[int] | None, order: list[str], path: Path) -> None:
    """Horizontal box plots of prompt length (words): the pool on top, then each selected subset.

    Horizontal boxes stay readable with a dozen methods; a subset skewed to short or long prompts
    shows up immediately against the pool's box.
    """
    plt = _plt()
    names = [m for m in order if m in lengths] + sorted(m for m in lengths if m not in order)
    data = [lengths[m] for m in names]
    if pool:
        names, data = ["pool"] + names, [pool] + data
    names, data = names[::-1], data[::-1]  # first entry at the top
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.45 * len(names) + 1.5)))
    if data:
        box = ax.boxplot(data, orientation="horizontal", showfliers=False, patch_artist=True, widths=0.6)
        ax.set_yticks(np.arange(1, len(names) + 1), names)
        for name, patch in zip(names, box["boxes"]):
            patch.set_facecolor("lightgray" if name == "pool" else "lightsteelblue")
        for i, values in enumerate(data, 1):
            ax.annotate(
                f"n={len(values)}",
                (1.0, i),
                xycoords=("axes fraction", "data"),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
    else:
        ax.text(0.5, 0.5, "no selected subsets stored", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("prompt length (words)")
    ax.set_title("Prompt length of selected examples vs the training pool")
    fig.tight_layout()
    artifacts.write(path, lambda fh: fig.savefig(fh, format="png", dpi=110, metadata=_PNG_META))
    plt.close(fig)
