"""Figures for sequential runs: a metric against the number of edits, one panel per base method
(base, its BLUE variant and the unedited model on the same records), with interval bands.

Input is the long-format rows of :func:`bluebook.experiments.curves.curve_rows`
(``{method, edits, metric, value, low, high, n}``), read by key only.
"""
from __future__ import annotations

from typing import Sequence

from bluebook.plots.figure import new_figure
from bluebook.plots.replication import BASE_COLOR, BLUE_COLOR, LABELS

UNEDITED_COLOR = "#b07a2a"
__all__ = ["metric_curves", "ability_curves"]


def _bases(rows) -> list[str]:
    out = []
    for r in rows:
        m = r["method"]
        b = m[:-5] if m.endswith("_blue") else m
        if b != "unedited" and b not in out:
            out.append(b)
    return out


def _series(rows, method, metric):
    pts = sorted((r for r in rows if r["method"] == method and r["metric"] == metric), key=lambda r: r["edits"])
    return ([r["edits"] for r in pts], [r["value"] for r in pts], [r["low"] for r in pts], [r["high"] for r in pts])


def _draw(ax, rows, method, metric, color, label, style="-"):
    x, y, lo, hi = _series(rows, method, metric)
    if not x:
        return False
    ax.plot(x, y, style, marker="o", ms=4, color=color, label=label)
    ax.fill_between(x, lo, hi, color=color, alpha=0.18, linewidth=0)
    return True


def metric_curves(rows: Sequence[dict], metrics: Sequence[str] = ("efficacy", "generalization", "specificity"),
                  bases: Sequence[str] | None = None, title: str | None = None, unedited: bool = True):
    """A grid: one row per metric, one column per base method; each panel shows the base method,
    its BLUE variant and (dashed) the unedited model on the same records, with 95 % intervals."""
    bases = list(bases or _bases(rows))
    fig = new_figure(1, figsize=(3.4 * max(1, len(bases)), 2.6 * len(metrics)), layout="constrained")[0]
    fig.clear()
    axes = fig.subplots(len(metrics), max(1, len(bases)), squeeze=False, sharex=True)
    for i, metric in enumerate(metrics):
        for j, base in enumerate(bases):
            ax = axes[i][j]
            _draw(ax, rows, base, metric, BASE_COLOR, "base method")
            _draw(ax, rows, f"{base}_blue", metric, BLUE_COLOR, "its BLUE variant")
            if unedited:
                _draw(ax, rows, "unedited", metric, UNEDITED_COLOR, "unedited model, same records", style="--")
            if i == 0:
                ax.set_title(LABELS.get(base, base))
            if j == 0:
                ax.set_ylabel(f"{metric} (×100)" if metric != "fluency" else "fluency (n-gram entropy ×100)")
            if i == len(metrics) - 1:
                ax.set_xlabel("edits applied")
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def ability_curves(rows: Sequence[dict], metrics: Sequence[str], bases: Sequence[str] | None = None,
                   title: str | None = None):
    """General ability along the run: one panel per ability metric, every method as a line, the
    unedited value (0 edits) as the first point of each line."""
    bases = list(bases or _bases(rows))
    fig, axes = new_figure(len(metrics), figsize=(3.3 * len(metrics), 3.0), layout="constrained")
    for ax, metric in zip(axes, metrics):
        key = f"ability:{metric}"
        base0 = [r for r in rows if r["method"] == "unedited" and r["metric"] == key]
        for base in bases:
            for method, color in ((base, BASE_COLOR), (f"{base}_blue", BLUE_COLOR)):
                pts = sorted([r for r in rows if r["method"] == method and r["metric"] == key] + base0,
                             key=lambda r: r["edits"])
                if len(pts) <= len(base0):
                    continue
                x = [r["edits"] for r in pts]
                style = "-" if len(bases) == 1 or base == bases[0] else ":"
                ax.plot(x, [r["value"] for r in pts], style, marker="o", ms=3, color=color,
                        label=LABELS.get(base, base) + ("-BLUE" if method.endswith("_blue") else ""))
                ax.fill_between(x, [r["low"] for r in pts], [r["high"] for r in pts], color=color, alpha=0.12,
                                linewidth=0)
        ax.set_title(metric.replace("_", " "))
        ax.set_xlabel("edits applied")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), frameon=False)
    if title:
        fig.suptitle(title)
    return fig
