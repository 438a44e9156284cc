"""Figures for notebooks 06 (BLUE: steps per layer, base vs BLUE metrics, which weights changed) and
10 (the second layer chosen per batch).

Every function returns a ``matplotlib.figure.Figure``; none calls ``plt.show()`` or touches the
global style.
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bluebook.plots.figure import new_figure

METRICS = ("efficacy", "generalization", "specificity")
_BASE_COLOR, _BLUE_COLOR = "#9e9e9e", "#1f5fa8"


def steps_per_layer(layers, mean, std=None, *, paper: dict[str, list[float]] | None = None,
                    max_steps: int | None = None, title: str | None = None) -> Figure:
    """Bars (± std) of the mean v* steps at each critical layer; with ``paper``, a second panel draws
    the paper's reported means against the critical-layer index beside this run's."""
    ncols = 2 if paper else 1
    fig, axes = new_figure(ncols, (5.2 * ncols, 3.6))
    ax = axes[0]
    x = np.arange(len(layers))
    ax.bar(x, mean, yerr=std, capsize=4, color=_BLUE_COLOR, alpha=0.85, ecolor="black")
    ax.set_xticks(x, [f"L{layer}" for layer in layers])
    ax.set_xlabel("critical layer (updated in this order)")
    ax.set_ylabel("v* optimisation steps")
    if max_steps is not None:
        ax.axhline(max_steps, color="0.4", ls="--", lw=1)
        ax.text(x[-1], max_steps, "step budget", ha="right", va="bottom", fontsize=8, color="0.3")
    ax.set_title(title or "steps per layer (direct residual, all layers)")
    if paper:
        ax2 = axes[1]
        for name, vals in paper.items():
            ax2.plot(range(len(vals)), vals, marker="o", label=f"paper: {name}")
        ax2.plot(x, mean, marker="s", color=_BLUE_COLOR, lw=2, label="this run")
        ax2.set_xlabel("critical-layer index i (0 = first)")
        ax2.set_ylabel("mean steps")
        ax2.set_title("same pattern across models")
        ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def method_comparison(results: dict[str, dict], bases=("memit", "alphaedit", "rect", "prune"),
                      metrics=METRICS, title: str | None = None) -> Figure:
    """Grouped bars: for each base method, the base variant and its ``_blue`` variant, one panel
    per metric. ``results[name][metric]`` holds the ×100 numbers of :func:`bluebook.metrics.summarize`."""
    fig, axes = new_figure(len(metrics), (4.2 * len(metrics), 3.6))
    x = np.arange(len(bases))
    w = 0.38
    for ax, m in zip(axes, metrics):
        base_v = [results.get(b, {}).get(m) or 0.0 for b in bases]
        blue_v = [results.get(f"{b}_blue", {}).get(m) or 0.0 for b in bases]
        ax.bar(x - w / 2, base_v, w, label="base", color=_BASE_COLOR)
        ax.bar(x + w / 2, blue_v, w, label="+ BLUE", color=_BLUE_COLOR)
        for xi, (a, b) in enumerate(zip(base_v, blue_v)):
            ax.text(xi - w / 2, a + 1, f"{a:.1f}", ha="center", fontsize=7)     # 62.5 stays 62.5
            ax.text(xi + w / 2, b + 1, f"{b:.1f}", ha="center", fontsize=7)
        ax.set_xticks(x, [b.upper() if b != "alphaedit" else "AlphaEdit" for b in bases])
        ax.set_ylim(0, 112)
        ax.set_title(m.capitalize())
    axes[0].set_ylabel("% of cases")
    # the legend sits above the panels, where it cannot cover a bar
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncol=2, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return fig


def changed_weights(norms: dict[str, dict], layers=None, title: str | None = None) -> Figure:
    """Heatmap of ``‖W_after − W_before‖_F`` (layer × method); blank cells: weight untouched."""
    methods = list(norms)
    if layers is None:
        layers = sorted({int(layer) for v in norms.values() for layer, x in v.items() if x})
    data = np.array([[float(norms[m].get(layer, norms[m].get(str(layer), 0.0)) or 0.0) for m in methods]
                     for layer in layers])
    shown = np.where(data > 0, data, np.nan)
    fig, (ax,) = new_figure(1, (1.0 + 1.05 * len(methods), 0.9 + 0.45 * len(layers)))
    im = ax.imshow(shown, cmap="Blues", aspect="auto")
    ax.set_xticks(range(len(methods)), methods, rotation=35, ha="right")
    ax.set_yticks(range(len(layers)), [f"L{layer}" for layer in layers])
    vmax = np.nanmax(shown) if np.isfinite(shown).any() else 1.0
    for i in range(len(layers)):
        for j in range(len(methods)):
            v = data[i, j]
            ax.text(j, i, f"{v:.2f}" if v > 0 else "·", ha="center", va="center", fontsize=7,
                    color="white" if v > 0.6 * vmax else "black")
    fig.colorbar(im, ax=ax, label="‖ΔW‖_F")
    ax.set_title(title or "which weights changed")
    fig.tight_layout()
    return fig


def choice_gaps(candidates: dict, chosen: int, first: int, title: str | None = None) -> Figure:
    """What :class:`bluebook.core.distribute.Dynamic` measured for one batch: the remaining relative
    gap ``‖v* − h‖ / ‖h‖`` at each candidate layer after the first update (the chosen one
    highlighted), and the mean v* steps it took to find it."""
    layers = sorted(int(l) for l in candidates)
    gaps = [candidates[l]["gap"] for l in layers]
    steps = [candidates[l]["steps"] for l in layers]
    fig, axes = new_figure(2, (9.0, 3.4))
    colors = [_BLUE_COLOR if l == chosen else _BASE_COLOR for l in layers]
    x = np.arange(len(layers))
    for ax, vals, label in ((axes[0], gaps, "remaining gap ‖v* − h‖ / ‖h‖"), (axes[1], steps, "mean v* steps")):
        bars = ax.bar(x, vals, color=colors)
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_xticks(x, [f"L{l}" for l in layers])
        ax.set_xlabel(f"candidate layer (after updating L{first})")
        ax.set_ylabel(label)
        ax.margins(y=0.15)
    axes[0].set_title(title or f"chosen: L{chosen} (blue)")
    axes[1].set_title("cost of measuring it")
    fig.tight_layout()
    return fig


def layers_over_sequence(per_batch: dict[str, list[list[int]]], layers, title: str | None = None) -> Figure:
    """Which critical layers each batch updated: one panel per run (``{label: [[layers of batch 0],
    ...]}``), batches across, layers up, a square per updated layer."""
    n = max(1, len(per_batch))
    fig, axes = new_figure(n, (4.6 * n, 3.0), sharey=True)
    layers = sorted(set(layers) | {l for batches in per_batch.values() for ls in batches for l in ls})
    for ax, (label, batches) in zip(axes, per_batch.items()):
        xs = [b for b, ls in enumerate(batches) for _ in ls]
        ys = [l for ls in batches for l in ls]
        colors = [_BASE_COLOR if l in (layers[0], layers[-1]) else _BLUE_COLOR for l in ys]
        ax.scatter(xs, ys, marker="s", s=36, c=colors)
        ax.set_yticks(layers, [f"L{l}" for l in layers])
        ax.set_ylim(layers[0] - 0.6, layers[-1] + 0.6)
        ax.set_xlabel("batch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(-0.5, max(len(batches), 1) - 0.5)
        ax.set_title(label, fontsize=9)
    axes[0].set_ylabel("updated layer")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
