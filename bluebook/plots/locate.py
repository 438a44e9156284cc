"""Figures for causal tracing (:mod:`bluebook.locate`): token × layer heatmaps and indirect-effect curves.

Every function returns a new ``matplotlib.figure.Figure``; nothing is shown and no global style
is changed.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from bluebook.plots.figure import new_figure

_KIND_TITLES = {"block": "restore block output", "mlp": "restore MLP output", "attn": "restore attention output"}
_KIND_CMAPS = {"block": "Purples", "mlp": "Greens", "attn": "Reds"}


def _token_labels(result) -> list[str]:
    first, last = result.subject_range
    labels = []
    for i, t in enumerate(result.tokens):
        t = repr(t)[1:-1]
        labels.append(t + "*" if first <= i <= last else t)
    return labels


def trace_heatmap(result, kinds: Sequence[str] | None = None, width: float = 4.2) -> Figure:
    """One panel per kind: p(target) with that module restored, tokens (rows) × layers (columns).

    Subject tokens are starred. The colour scale of each panel runs from the corrupted
    probability ``low`` to its own maximum; the title gives ``low``/``high``.
    """
    kinds = list(kinds or result.scores.keys())
    n_tok = len(result.tokens)
    fig, axes = new_figure(len(kinds), (width * len(kinds), 0.35 * n_tok + 1.6))
    labels = _token_labels(result)
    for ax, k in zip(axes, kinds):
        s = np.asarray(result.scores[k], dtype=float)
        vmax = np.nanmax(s) if np.isfinite(s).any() else 1.0
        im = ax.imshow(s, aspect="auto", cmap=_KIND_CMAPS.get(k, "viridis"), vmin=result.low,
                       vmax=max(vmax, result.low + 1e-6), interpolation="nearest")
        ax.set_yticks(range(n_tok))
        ax.set_yticklabels(labels, fontsize=8)
        ax.set_xlabel("layer")
        ax.set_title(_KIND_TITLES.get(k, k), fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=f"p({result.target.strip()})")
    fig.suptitle(f"{result.prompt!r}: clean p = {result.high:.3f}, corrupted p = {result.low:.3f}", fontsize=10)
    fig.tight_layout()
    return fig


def ie_curves(curves: dict, highlight: Sequence[int] | None = None, title: str = "",
              labels: dict | None = None, ax_size=(7.0, 3.2)) -> Figure:
    """Indirect effect at the subject's last token against layer, one line per entry of ``curves``.

    ``curves`` maps a label (e.g. ``"mlp"`` or ``"mlp (recorded, 50 prompts)"``) to one value per
    layer. ``highlight`` shades a band of layers (e.g. the critical layers).
    """
    fig, (ax,) = new_figure(1, ax_size)
    for name, c in curves.items():
        c = np.asarray(c, dtype=float)
        ax.plot(np.arange(c.size), c, marker="o", ms=3, label=(labels or {}).get(name, name))
    if highlight:
        ax.axvspan(min(highlight) - 0.5, max(highlight) + 0.5, color="gold", alpha=0.25,
                   label=f"critical layers {min(highlight)}–{max(highlight)}")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("layer")
    ax.set_ylabel("indirect effect (Δp)")
    ax.set_title(title or "mean indirect effect at the subject's last token", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


__all__ = ["trace_heatmap", "ie_curves"]
