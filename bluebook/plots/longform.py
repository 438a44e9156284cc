"""Figures for notebook 11 (long-form editing): scores per method with their intervals.

Every function returns a ``matplotlib.figure.Figure``; none calls ``plt.show()`` or touches the
global style.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from bluebook.plots.figure import new_figure

_COLORS = {"none": "#cfcfcf", "memit": "#9e9e9e", "memit_blue": "#1f5fa8", "alphaedit": "#c9a66b",
           "alphaedit_blue": "#2e8b57"}
_LABELS = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "bleu": "BLEU", "token_f1": "token F1",
           "similarity": "similarity"}


def score_bars(summary: Mapping, metrics: Sequence[str] = ("rougeL", "rouge1", "bleu", "token_f1", "similarity"),
               kinds: Sequence[str] = ("prompt", "paraphrase"), title: str | None = None) -> Figure:
    """Grouped bars (95 % intervals as error bars) of each method's mean score, one panel per
    prompt kind. ``summary``: :func:`bluebook.experiments.longform.summarize_longform`'s output."""
    methods = list(summary["methods"])
    fig, axes = new_figure(len(kinds), (5.6 * len(kinds), 3.8))
    x = np.arange(len(metrics))
    w = 0.8 / max(1, len(methods))
    for ax, kind in zip(axes, kinds):
        for i, m in enumerate(methods):
            est = [summary["methods"][m][f"{kind}.{k}"] for k in metrics]
            v = np.array([e["value"] for e in est])
            err = np.array([[e["value"] - e["low"] for e in est], [e["high"] - e["value"] for e in est]])
            label = "unedited" if m == "none" else m
            ax.bar(x + (i - (len(methods) - 1) / 2) * w, v, w, yerr=err, capsize=2, label=label,
                   color=_COLORS.get(m, f"C{i}"), ecolor="black")
        ax.set_xticks(x, [_LABELS.get(k, k) for k in metrics])
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{'edit prompt' if kind == 'prompt' else 'paraphrased question'} (n={summary['n_records']})")
        ax.set_ylabel("score against the target (mean, 95 % CI)")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def locality_bars(summary: Mapping, title: str | None = None) -> Figure:
    """Per method: ROUGE-L between the unedited and the edited continuation on unrelated prompts and
    the share left identical (95 % intervals)."""
    methods = [m for m in summary["methods"] if m != "none"]
    fig, axes = new_figure(1, (5.4, 3.4))
    ax = axes[0]
    x = np.arange(2)
    w = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        est = [summary["methods"][m][k] for k in ("locality.rougeL", "locality.unchanged")]
        v = np.array([e["value"] for e in est])
        err = np.array([[e["value"] - e["low"] for e in est], [e["high"] - e["value"] for e in est]])
        ax.bar(x + (i - (len(methods) - 1) / 2) * w, v, w, yerr=err, capsize=2, label=m,
               color=_COLORS.get(m, f"C{i}"), ecolor="black")
    ax.set_xticks(x, ["ROUGE-L to the unedited text", "identical continuation"])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("unrelated prompts (1 = unchanged)")
    ax.set_title(title or "locality")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return fig
