"""Figures for the residual-distribution analysis (notebooks 04 and 05).

Each function takes results of :mod:`bluebook.analysis` (read by attribute and key only) and returns
a new ``matplotlib.figure.Figure``; nothing here calls ``plt.show()`` or changes global
matplotlib/seaborn state.
"""
from __future__ import annotations

import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from bluebook.plots.figure import new_figure

_COLORS = {"distributed": "#d95f02", "direct": "#1b9e77", "deviation": "#7570b3", "bound": "#e7298a",
           "tight_bound": "#66a61e"}


def _fig(ncols=1, width=5.0, height=3.6):
    return new_figure(ncols, (width * ncols, height))


def contribution_curves(scores) -> Figure:
    """Mean contribution score per critical layer for distributed vs direct residuals (points: requests)."""
    df = pd.DataFrame(scores.rows())
    fig, (ax,) = _fig()
    sns.lineplot(df, x="layer", y="score", hue="residual", marker="o", errorbar="sd", palette=_COLORS, ax=ax)
    sns.stripplot(df, x="layer", y="score", hue="residual", palette=_COLORS, native_scale=True, dodge=False,
                  alpha=0.35, size=3, legend=False, ax=ax)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(scores.layers)
    ax.set_ylabel(r"contribution $s = P_{\theta^*}(o^*|p) - P_\theta(o^*|p)$")
    ax.set_xlabel("critical layer l")
    ax.set_title("Contribution of the residual at each layer")
    return fig


def cosine_curve(residuals) -> Figure:
    """``cos(δ^L/(N_L−i), δ^l)`` per critical layer (mean ± sd, points: requests)."""
    df = pd.DataFrame(residuals.rows())
    fig, (ax,) = _fig()
    sns.lineplot(df, x="layer", y="cosine", marker="o", errorbar="sd", color=_COLORS["distributed"], ax=ax)
    sns.stripplot(df, x="layer", y="cosine", native_scale=True, color=_COLORS["distributed"], alpha=0.35, size=3,
                  ax=ax)
    ax.set_xticks(residuals.layers)
    ax.set_ylim(min(-0.05, df["cosine"].min() - 0.05), 1.05)
    ax.set_xlabel("critical layer l")
    ax.set_ylabel(r"cos$(\delta^L/(N_L-i),\ \delta^l)$")
    ax.set_title("Distributed vs directly computed residual")
    return fig


def residual_deviation_curve(residuals) -> Figure:
    """``‖δ^l − δ^L‖`` and ``‖δ^L/(N_L−i) − δ^l‖`` per critical layer, with ``‖δ^l‖`` for scale."""
    df = pd.DataFrame(residuals.rows())
    long = df.melt(id_vars=["layer"], value_vars=["deviation", "distribution_error", "norm_direct"],
                   var_name="quantity", value_name="norm")
    names = {"deviation": r"$\|\delta^l-\delta^L\|$", "distribution_error": r"$\|\delta^L/(N_L-i)-\delta^l\|$",
             "norm_direct": r"$\|\delta^l\|$"}
    long["quantity"] = long["quantity"].map(names)
    fig, (ax,) = _fig()
    sns.lineplot(long, x="layer", y="norm", hue="quantity", style="quantity", marker="o", errorbar="sd", ax=ax)
    ax.set_xticks(residuals.layers)
    ax.set_xlabel("critical layer l")
    ax.set_ylabel("L2 norm")
    ax.set_title("Residual deviation per layer")
    return fig


def single_layer_bars(results: dict, metrics=("efficacy", "generalization")) -> Figure:
    """Bars of CounterFact success rates after editing one layer only.

    ``results``: ``{layer: single_layer_editing(...) output}``.
    """
    recs = []
    for layer, r in sorted(results.items()):
        for kind in ("distributed", "direct"):
            for m in metrics:
                recs.append({"layer": layer, "residual": kind, "metric": m, "value": r[kind][m]})
    df = pd.DataFrame(recs)
    fig, axes = _fig(len(metrics), width=4.5)
    for ax, m in zip(axes, metrics):
        sub = df[df["metric"] == m]
        sns.barplot(sub, x="layer", y="value", hue="residual", palette=_COLORS, ax=ax)
        base = np.mean([r["unedited"][m] for r in results.values()])
        ax.axhline(base, color="grey", ls="--", lw=0.8, label="unedited")
        ax.set_ylim(0, 105)
        ax.set_ylabel(f"{m} (%)")
        ax.set_xlabel("the only edited layer")
        ax.legend(fontsize=8)
    fig.suptitle("Single-layer editing: distributed vs direct residual")
    fig.tight_layout()
    return fig


def deviation_vs_bound(table, bound: str = "bound") -> Figure:
    """Log-log scatter of the actual ``‖Δ^{l*} − Δ^l‖₂`` against the Theorem 4.1 bound, with ``y = x``.

    Rows with a zero deviation (``l = L``, where both residuals coincide) cannot be drawn on a log
    scale and are counted in the title instead.
    """
    df = pd.DataFrame(table.rows)
    pos = df[(df["deviation"] > 0) & (df[bound] > 0)]
    fig, (ax,) = _fig(width=4.8, height=4.4)
    sns.scatterplot(pos, x=bound, y="deviation", hue="distance", palette="viridis", ax=ax, s=22)
    lo = min(pos[bound].min(), pos["deviation"].min()) * 0.7 if len(pos) else 1e-6
    hi = max(pos[bound].max(), pos["deviation"].max()) * 1.4 if len(pos) else 1.0
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.9, label="y = x")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"Theorem 4.1 {bound.replace('_', ' ')}")
    ax.set_ylabel(r"actual $\|\Delta^{l*}-\Delta^l\|_2$")
    ax.set_title(f"deviation ≤ bound ({len(df) - len(pos)} zero rows at l = L not drawn)", fontsize=9)
    ax.legend(fontsize=8, title="L − l")
    return fig


def deviation_growth(distance_table, batch_table=None, seq_table=None) -> Figure:
    """Deviation and bound against ``L − l``, batch size and sequence length (one panel each, log y)."""
    panels = [("distance", distance_table, "L − l")]
    if batch_table is not None and len(batch_table):
        panels.append(("batch_size", batch_table, "batch size"))
    if seq_table is not None and len(seq_table):
        panels.append(("seq_length", seq_table, "earlier batches in $C_p$"))
    fig, axes = _fig(len(panels), width=4.2)
    for ax, (x, table, label) in zip(axes, panels):
        df = pd.DataFrame(table.rows)
        if x != "distance":
            df = df[df["distance"] > 0]
        long = df.melt(id_vars=[x], value_vars=["deviation", "tight_bound", "bound"], var_name="quantity",
                       value_name="value")
        long = long[long["value"] > 0]
        sns.lineplot(long, x=x, y="value", hue="quantity", marker="o", errorbar="sd", palette=_COLORS, ax=ax)
        ax.set_yscale("log")
        # decade ticks only: minor labels on a narrow log axis run into each other
        ax.yaxis.set_major_locator(mticker.LogLocator(base=10, numticks=6))
        ax.yaxis.set_minor_formatter(mticker.NullFormatter())
        ax.set_xticks(sorted(df[x].unique()))
        ax.set_xlabel(label)
        ax.set_ylabel(r"$\|\cdot\|_2$")
        ax.legend(fontsize=8)
    fig.suptitle("Weight deviation of the distributed residual and its bound")
    fig.tight_layout()
    return fig
