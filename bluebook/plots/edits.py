"""Figures for single edits: before/after probability bars and probability tables.

Inputs are plain row dicts (or a ``pandas.DataFrame`` of them) with a ``prompt`` column, a
``group`` column (``"edited"``, ``"paraphrase"``, ``"neighbour"`` ...) and one numeric column per
model state (``"before"``, ``"after"``, ...). Functions return a new ``Figure`` each.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from bluebook.plots.figure import new_figure


def _rows(table) -> list[dict]:
    if hasattr(table, "to_dict"):
        return table.to_dict("records")
    return [dict(r) for r in table]


def _short(s: str, n: int = 38) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def before_after_bars(table, columns: Sequence[str] = ("before", "after"), ylabel: str = "probability",
                      title: str = "", label_col: str = "prompt", group_col: str = "group") -> Figure:
    """Grouped bars: one group of bars per row (prompt), one bar per column (model state)."""
    rows = _rows(table)
    if not rows:
        raise ValueError("table is empty")
    n, k = len(rows), len(columns)
    fig, (ax,) = new_figure(1, (max(6.0, 0.9 * n + 2), 3.8))
    x = np.arange(n)
    w = 0.8 / k
    for j, col in enumerate(columns):
        ax.bar(x + (j - (k - 1) / 2) * w, [float(r[col]) for r in rows], w, label=col)
    names = [(f"[{r[group_col]}] " if group_col in r else "") + _short(str(r[label_col])) for r in rows]
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def probability_table(table, columns: Sequence[str] | None = None, title: str = "", fmt: str = "{:.3f}") -> Figure:
    """A rendered table (prompt, group, numeric columns) as a figure, for reports and READMEs."""
    rows = _rows(table)
    if not rows:
        raise ValueError("table is empty")
    columns = list(columns or rows[0].keys())
    cells = [[fmt.format(r[c]) if isinstance(r[c], (float, np.floating)) else _short(str(r[c]), 48)
              for c in columns] for r in rows]
    fig, (ax,) = new_figure(1, (min(14.0, 1.6 * len(columns) + 3), 0.32 * len(rows) + 0.9))
    ax.axis("off")
    t = ax.table(cellText=cells, colLabels=columns, loc="center", cellLoc="left")
    t.auto_set_font_size(False)
    t.set_fontsize(8)
    t.auto_set_column_width(list(range(len(columns))))
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def topk_table(rows: Sequence[dict], title: str = "") -> Figure:
    """Top-k next-token predictions: ``rows`` of ``{"prompt": str, "top": [(token, prob), ...]}``."""
    flat = [{"prompt": r["prompt"], **{f"#{i + 1}": f"{t!r} {p:.2f}" for i, (t, p) in enumerate(r["top"])}}
            for r in rows]
    return probability_table(flat, title=title)


__all__ = ["before_after_bars", "probability_table", "topk_table"]
