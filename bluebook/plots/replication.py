"""Figures for the replication tables (notebook 07) and the general-ability checks (notebook 08).

Every function returns a ``matplotlib.figure.Figure``; none calls ``plt.show()`` or changes global
style (seaborn is called with explicit ``ax=`` and no theme).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns

from bluebook.core.names import PAPER_ORDER
from bluebook.plots.figure import new_figure

METRICS = ("efficacy", "generalization", "specificity")
BASE_COLOR, BLUE_COLOR, NONE_COLOR = "#9a9a9a", "#1f5fbf", "#d9d9d9"
LABELS = {"memit": "MEMIT", "alphaedit": "AlphaEdit", "rect": "RECT", "prune": "PRUNE", "memit_seq": "MEMIT-seq"}


def _summaries(results: Mapping) -> dict:
    """Accept ``replicate()``'s results dict or a plain ``{method: summary}`` mapping."""
    rows = results.get("methods", results) if isinstance(results, Mapping) else results
    return {m: (r["summary"] if isinstance(r, Mapping) and "summary" in r else r) for m, r in rows.items()}


def _bases(methods) -> list[str]:
    bases = []
    for m in methods:
        b = m[:-5] if m.endswith("_blue") else m
        if b != "unedited" and b not in bases:
            bases.append(b)
    order = [b for b in PAPER_ORDER if b in bases]
    return order + [b for b in bases if b not in order]


def method_bars(results: Mapping, metrics: Sequence[str] = METRICS, title: str | None = None):
    """Grouped bars: one panel per metric, base method and its BLUE variant side by side.

    A dashed line marks the unedited model when the results contain it.
    """
    rows = _summaries(results)
    bases = _bases(rows)
    fig, axes = new_figure(len(metrics), (3.6 * len(metrics), 3.2), layout="constrained", sharey=True)
    x = np.arange(len(bases))
    w = 0.38
    for ax, metric in zip(axes, metrics):
        for off, suffix, color, label in ((-w / 2, "", BASE_COLOR, "base"), (w / 2, "_blue", BLUE_COLOR, "BLUE")):
            vals = [rows.get(b + suffix, {}).get(metric) for b in bases]
            vals = [np.nan if v is None else float(v) for v in vals]
            ax.bar(x + off, vals, width=w, color=color, label=label)
        if "unedited" in rows and rows["unedited"].get(metric) is not None:
            ax.axhline(float(rows["unedited"][metric]), color="k", ls="--", lw=1, label="unedited")
        ax.set_xticks(x, [LABELS.get(b, b) for b in bases], rotation=20)
        ax.set_title(metric.capitalize())
        ax.set_ylim(0, 105)
    axes[0].set_ylabel("×100")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def results_heatmap(results: Mapping, metrics: Sequence[str] = METRICS, title: str | None = None):
    """The results table as a heatmap (rows: unedited, then the paper's method order)."""
    rows = _summaries(results)
    order = (["unedited"] if "unedited" in rows else []) + [m for m in PAPER_ORDER if m in rows] + \
        [m for m in rows if m not in PAPER_ORDER and m != "unedited"]
    data = np.array([[np.nan if rows[m].get(k) is None else float(rows[m][k]) for k in metrics] for m in order])
    fig, (ax,) = new_figure(1, (1.6 * len(metrics) + 2.0, 0.45 * len(order) + 1.2), layout="constrained")
    sns.heatmap(data, annot=True, fmt=".1f", vmin=0, vmax=100, cmap="Blues", cbar=False, ax=ax,
                xticklabels=[k.capitalize() for k in metrics], yticklabels=order)
    ax.tick_params(axis="y", rotation=0)
    if title:
        ax.set_title(title)
    return fig


def perplexity_bars(ppl: Mapping[str, float], title: str = "Held-out Wikipedia perplexity"):
    """Bars of perplexity per model state (e.g. ``{"unedited": 21.3, "memit": 23.0, ...}``)."""
    names = list(ppl)
    vals = [float(ppl[n]) for n in names]
    colors = [NONE_COLOR if n == "unedited" else (BLUE_COLOR if n.endswith("_blue") else BASE_COLOR) for n in names]
    fig, (ax,) = new_figure(1, (0.7 * len(names) + 2.0, 3.2), layout="constrained")
    ax.bar(np.arange(len(names)), vals, color=colors)
    if "unedited" in ppl:
        ax.axhline(float(ppl["unedited"]), color="k", ls="--", lw=1)
    ax.set_xticks(np.arange(len(names)), names, rotation=35, ha="right")
    # bars from 0 would make every model look the same: the axis starts just below the smallest value
    lo, hi = min(vals), max(vals)
    pad = max(0.05 * (hi - lo), 0.002 * hi)
    ax.set_ylim(lo - 2 * pad, hi + pad)
    for i, v in enumerate(vals):
        ax.text(i, v + pad / 4, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("perplexity (lower is better)")
    ax.set_title(title)
    return fig


def shift_distributions(shifts: Mapping[str, Sequence[float]], kind: str = "violin",
                        ylabel: str = "relative L2 shift", title: str | None = None):
    """Distribution of per-subject representation shifts per method (seaborn violin or box)."""
    rows = [(m, float(v)) for m, vals in shifts.items() for v in np.asarray(vals).ravel()]
    df = pd.DataFrame(rows, columns=["method", "shift"])
    names = list(shifts)
    palette = {n: (BLUE_COLOR if n.endswith("_blue") else BASE_COLOR) for n in names}
    fig, (ax,) = new_figure(1, (0.8 * len(names) + 2.0, 3.4), layout="constrained")
    if kind == "violin":
        sns.violinplot(data=df, x="method", y="shift", hue="method", palette=palette, order=names, cut=0,
                       inner="quart", legend=False, ax=ax)
    elif kind == "box":
        sns.boxplot(data=df, x="method", y="shift", hue="method", palette=palette, order=names, legend=False,
                    ax=ax)
    else:
        raise ValueError(f"kind must be 'violin' or 'box', got {kind!r}")
    ax.tick_params(axis="x", rotation=35)
    ax.set_xlabel("")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return fig


def beside_paper(ours: Mapping[str, Mapping[str, float]], paper: Mapping[str, Mapping[str, Mapping[str, float]]],
                 metrics: Sequence[str] = METRICS, ours_label: str = "ours", title: str | None = None,
                 intervals: Mapping[str, Mapping[str, tuple]] | None = None):
    """Our numbers beside the paper's: one panel per metric, one group per method that both have,
    one bar per source (``ours`` ``{method: {metric: value}}``; ``paper`` ``{model: {method: {metric:
    value}}}``). ``intervals`` ``{method: {metric: (low, high)}}`` draws error bars on our bars."""
    sources = [ours_label] + list(paper)
    methods = [m for m in PAPER_ORDER if m in ours and any(m in rows for rows in paper.values())]
    if not methods:
        raise ValueError("beside_paper: no method appears both in ours and in the paper's rows")
    fig, axes = new_figure(len(metrics), (3.8 * len(metrics), 3.4), layout="constrained")
    w = 0.8 / len(sources)
    shades = ["#1f5fbf", "#6f6f6f", "#b5b5b5", "#dcdcdc"]
    for ax, metric in zip(axes, metrics):
        for k, src in enumerate(sources):
            rows = ours if src == ours_label else paper[src]
            vals = [rows.get(m, {}).get(metric) for m in methods]
            xs = np.arange(len(methods)) + (k - (len(sources) - 1) / 2) * w
            heights = [np.nan if v is None else float(v) for v in vals]
            err = None
            if src == ours_label and intervals:
                lo = [h - intervals.get(m, {}).get(metric, (h, h))[0] for m, h in zip(methods, heights)]
                hi = [intervals.get(m, {}).get(metric, (h, h))[1] - h for m, h in zip(methods, heights)]
                err = [lo, hi]
            ax.bar(xs, heights, w, yerr=err, capsize=2, color=shades[k % len(shades)], label=src)
        names = [LABELS.get(m[:-5], m[:-5]) + "-BLUE" if m.endswith("_blue") else LABELS.get(m, m) for m in methods]
        ax.set_xticks(np.arange(len(methods)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 105)
        ax.set_title(metric.capitalize())
    axes[0].set_ylabel("×100")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(sources), frameon=False, fontsize=8)
    if title:
        fig.suptitle(title)
    return fig
