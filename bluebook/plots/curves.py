"""Figures for sequential runs: a metric against the number of edits, one panel per base method
(base, its BLUE variant and the unedited model on the same records), with interval bands.

Input is the long-format rows of :func:`bluebook.experiments.curves.curve_rows`
(``{method, edits, metric, value, low, high, n}``), read by key only.
"""
from __future__ import annotations

from typing import Sequence

from bluebook.core.names import read_method
from bluebook.plots.figure import new_figure
from bluebook.plots.replication import BASE_COLOR, BLUE_COLOR, LABELS

UNEDITED_COLOR = "#b07a2a"
DYNAMIC_COLOR = "#2a9d8f"          # BLUE with its second layer chosen per batch (beyond the paper)
__all__ = ["metric_curves", "ability_curves", "paired_forest"]
RULE_MARKERS = {"same cap per optimisation": ("s", "#9a9a9a"), "equal total per request": ("o", BLUE_COLOR)}


def _bases(rows) -> list[str]:
    """The base methods of the rows' methods, in order of appearance (``memit_blue_dynamic`` → ``memit``)."""
    out = []
    for r in rows:
        if r["method"] == "unedited":
            continue
        b = read_method(r["method"])[1]
        if b not in out:
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
            _draw(ax, rows, f"{base}_blue_dynamic", metric, DYNAMIC_COLOR, "BLUE, second layer chosen per batch")
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
            for method, color, tag in ((base, BASE_COLOR, ""), (f"{base}_blue", BLUE_COLOR, "-BLUE"),
                                       (f"{base}_blue_dynamic", DYNAMIC_COLOR, "-BLUE-dynamic")):
                pts = sorted([r for r in rows if r["method"] == method and r["metric"] == key] + base0,
                             key=lambda r: r["edits"])
                if len(pts) <= len(base0):
                    continue
                x = [r["edits"] for r in pts]
                style = "-" if len(bases) == 1 or base == bases[0] else ":"
                ax.plot(x, [r["value"] for r in pts], style, marker="o", ms=3, color=color,
                        label=LABELS.get(base, base) + tag)
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


def paired_forest(rows: Sequence[dict], metrics: Sequence[str] = ("efficacy", "generalization", "specificity"),  # noqa: C901 - figure layout options
                  title: str | None = None):
    """Paired BLUE − base differences with their 95 % intervals, one panel per metric, one line per
    dataset and base method (labelled by the base), one marker per v* budget rule (grey squares:
    the same cap per optimisation; blue circles: an equal total per request), so that what the
    budget carries shows as the gap between the two.
    ``rows``: :func:`bluebook.experiments.verdicts.recorded_comparisons`."""
    runs_of = {}
    for r in rows:
        runs_of.setdefault(r["dataset"], set()).add(r["same_cap_run"])

    def label(r):                                    # the dataset, or the run where a dataset has several
        where = r["dataset"] if len(runs_of[r["dataset"]]) == 1 else r["same_cap_run"]
        return f"{where}: {LABELS.get(r['base'], r['base'])}"

    labels = []
    for r in rows:
        if label(r) not in labels:
            labels.append(label(r))
    rules = [rule for rule in RULE_MARKERS if any(r["rule"] == rule for r in rows)]
    fig = new_figure(1, figsize=(3.3 * len(metrics) + 1.6, 0.55 * max(1, len(labels)) + 1.4), layout="constrained")[0]
    fig.clear()
    axes = fig.subplots(1, len(metrics), squeeze=False, sharey=True)[0]
    for ax, metric in zip(axes, metrics):
        for r in rows:
            c = r["claims"].get(metric)
            if not c or c.get("ours") is None or r["rule"] not in RULE_MARKERS:
                continue
            k = rules.index(r["rule"])
            y = labels.index(label(r)) + (k - (len(rules) - 1) / 2) * 0.25
            lo, hi = c["interval"]
            marker, color = RULE_MARKERS[r["rule"]]
            ax.errorbar([c["ours"]], [y], xerr=[[c["ours"] - lo], [hi - c["ours"]]], fmt=marker, color=color,
                        ms=5, capsize=3, label=r["rule"])
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_title(metric)
        ax.set_xlabel("BLUE − base (×100)")
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(range(len(labels)), labels)
    axes[0].set_ylim(len(labels) - 0.5, -0.5)              # first pair on top, room around a single one
    handles, names = [], []
    for ax in axes:
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in names:
                handles.append(h)
                names.append(n)
    if handles:
        fig.legend(handles, names, loc="outside lower center", ncols=len(names), frameon=False)
    if title:
        fig.suptitle(title)
    return fig
