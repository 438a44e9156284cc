"""From single traces to the critical layers: average many prompts, then pick a band of layers.

ROME found a peak of MLP indirect effect at the subject's last token in the early-middle layers;
MEMIT edits a window of layers around/ending at that peak. :func:`trace_many` averages the traces
of known facts into a :class:`TraceSummary` and :func:`propose_critical_layers` turns its MLP curve
into a layer window.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from bluebook.locate.known import filter_known
from bluebook.locate.prompts import as_triple, embedding_noise_scale
from bluebook.locate.trace import KINDS, TraceResult, trace_prompt

#: Row labels of the token-position summary (the six groups of ROME's average-effect figures).
ROW_LABELS = (
    "first subject token",
    "middle subject tokens",
    "last subject token",
    "first subsequent token",
    "further tokens",
    "last token",
)


@dataclass
class TraceSummary:
    """Indirect effects averaged over prompts.

    ``curves[kind][l]``: mean indirect effect (restored - corrupted probability) at the subject's
    last token when restoring ``kind`` at layer ``l``. ``grid[kind]``: ``(6, n_layers)`` mean
    indirect effect per token group (``row_labels``); a prompt with no token in a group (e.g. a
    one-token subject has no middle tokens) does not count toward that row, ``row_counts`` says
    how many prompts did. ``low``/``high``: mean corrupted / clean probability.
    """

    kinds: tuple[str, ...]
    layers: list[int]
    curves: dict[str, np.ndarray]
    grid: dict[str, np.ndarray]
    row_labels: tuple[str, ...]
    n_prompts: int
    per_prompt: list[TraceResult]
    row_counts: np.ndarray | None = None
    low: float = float("nan")
    high: float = float("nan")
    noise: float = float("nan")
    n_samples: int = 0
    seed: int = 0
    window: int = 1
    seconds: float = 0.0

    def to_dict(self, per_prompt: bool = False) -> dict:
        """JSON-friendly dict (lists instead of arrays)."""
        out = {
            "kinds": list(self.kinds), "layers": list(self.layers), "n_prompts": self.n_prompts,
            "curves": {k: v.tolist() for k, v in self.curves.items()},
            "grid": {k: v.tolist() for k, v in self.grid.items()},
            "row_labels": list(self.row_labels),
            "row_counts": None if self.row_counts is None else self.row_counts.tolist(),
            "low": self.low, "high": self.high, "noise": self.noise, "n_samples": self.n_samples,
            "seed": self.seed, "window": self.window, "seconds": self.seconds,
        }
        if per_prompt:
            out["per_prompt"] = [
                {"prompt": r.prompt, "tokens": r.tokens, "subject_range": list(r.subject_range),
                 "target": r.target, "low": r.low, "high": r.high,
                 "scores": {k: v.tolist() for k, v in r.scores.items()}} for r in self.per_prompt]
        return out


def _summary_rows(ie: np.ndarray, first: int, last: int) -> list[np.ndarray | None]:
    """The six token groups of one prompt's ``(n_tokens, L)`` indirect effects (None = empty group)."""
    n = ie.shape[0]

    def mean(a, b):
        if b <= a:
            return None
        block = ie[a:b]
        if np.isnan(block).all():
            return None
        return np.nanmean(block, axis=0)

    return [
        mean(first, first + 1),
        mean(first + 1, last),
        mean(last, last + 1),
        mean(last + 1, min(last + 2, n)),
        mean(last + 2, n - 1),
        mean(n - 1, n),
    ]


def summarize(results: Sequence[TraceResult], kinds: Sequence[str] | None = None) -> TraceSummary:
    """Average per-prompt traces into a :class:`TraceSummary` (indirect effect = score - low)."""
    if not results:
        raise ValueError("no trace results to summarise")
    kinds = tuple(kinds or results[0].scores.keys())
    L = results[0].n_layers
    curves, grid = {}, {}
    counts = np.zeros((len(kinds), len(ROW_LABELS)), dtype=int)
    for ki, k in enumerate(kinds):
        at_last = np.stack([r.indirect_effect(k)[r.subject_range[1]] for r in results])
        curves[k] = np.nanmean(at_last, axis=0) if not np.isnan(at_last).all() else np.full(L, np.nan)
        sums = np.zeros((len(ROW_LABELS), L))
        for r in results:
            rows = _summary_rows(r.indirect_effect(k), *r.subject_range)
            for i, row in enumerate(rows):
                if row is not None:
                    sums[i] += np.nan_to_num(row)
                    counts[ki, i] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            grid[k] = np.where(counts[ki][:, None] > 0, sums / np.maximum(counts[ki][:, None], 1), np.nan)
    r0 = results[0]
    return TraceSummary(kinds=kinds, layers=list(range(L)), curves=curves, grid=grid, row_labels=ROW_LABELS,
                        n_prompts=len(results), per_prompt=list(results), row_counts=counts,
                        low=float(np.mean([r.low for r in results])),
                        high=float(np.mean([r.high for r in results])),
                        noise=r0.noise, n_samples=r0.n_samples, seed=r0.seed, window=r0.window)


def trace_many(model, tok, requests_or_tuples: Iterable, kinds: Sequence[str] = KINDS,
               noise: float | None = None, n_samples: int = 3, seed: int = 0, window: int = 1,
               positions=None, batch_size: int = 512, known_only: bool = False, top_k: int = 1,
               progress: bool = False) -> TraceSummary:
    """Trace every prompt and average the indirect effects (:func:`summarize`).

    Items are ``(template, subject, target)`` tuples, :class:`~bluebook.data.EditRequest` s, or
    CounterFact records (their ``target_true`` is traced). Prompt ``i`` uses noise seed ``seed + i``.
    ``known_only=True`` first drops the prompts the model does not know (:func:`filter_known`);
    tracing only makes sense for facts the model predicts, so pass already-filtered items or set it.
    """
    items = list(requests_or_tuples)
    if known_only:
        items = filter_known(model, tok, items, top_k=top_k)
    if not items:
        raise ValueError("no prompts to trace" + (" (none is known to the model)" if known_only else ""))
    noise = embedding_noise_scale(model) if noise is None else float(noise)
    t0 = time.perf_counter()
    results = []
    for i, item in enumerate(items):
        t, s, y = as_triple(item)
        results.append(trace_prompt(model, tok, t, s, y, kinds=kinds, noise=noise, n_samples=n_samples,
                                    seed=seed + i, window=window, positions=positions, batch_size=batch_size))
        if progress:
            print(f"  traced {i + 1}/{len(items)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    summary = summarize(results, kinds)
    summary.seed = int(seed)
    summary.seconds = time.perf_counter() - t0
    return summary


# --------------------------------------------------------------------------------------------
# from curves to layers

def _curve(summary_or_curve, kind: str) -> np.ndarray:
    if isinstance(summary_or_curve, TraceSummary):
        if kind not in summary_or_curve.curves:
            raise ValueError(f"summary has no {kind!r} curve (kinds: {summary_or_curve.kinds})")
        c = summary_or_curve.curves[kind]
    else:
        c = summary_or_curve
    c = np.asarray(c, dtype=float)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"expected a 1-d curve over layers, got shape {c.shape}")
    if np.isnan(c).all():
        raise ValueError("the curve is all NaN (was the subject's last token traced?)")
    return c


def _check_min_layer(c: np.ndarray, min_layer: int) -> int:
    min_layer = int(min_layer)
    if not 0 <= min_layer < c.size:
        raise ValueError(f"min_layer must be between 0 and {c.size - 1}, got {min_layer}")
    return min_layer


def peak_layer(summary, kind: str = "mlp", min_layer: int = 0) -> int:
    """Layer (``>= min_layer``) with the largest mean indirect effect of ``kind`` at the subject's last token."""
    c = _curve(summary, kind)
    lo = _check_min_layer(c, min_layer)
    return lo + int(np.nanargmax(c[lo:]))


def propose_critical_layers(summary, kind: str = "mlp", width: int = 5, min_layer: int = 0) -> list[int]:
    """The ``width`` consecutive layers with the largest summed indirect effect at the subject's last token.

    This is the data-driven version of MEMIT's choice: MEMIT edits a band of consecutive MLP layers
    where causal tracing shows the MLP effect at the subject's last token is concentrated (layers
    3-8 of GPT-J, 13-17 of GPT2-XL, a window ending at/around the peak in the early-middle layers).
    Here the band is the sliding window maximising the summed curve (earliest on ties); compare
    it with :func:`peak_layer` and with the published presets before editing.

    ``min_layer`` excludes the first layers from the search. With single-layer restoration
    (``window=1``) the first MLP often shows a spike of its own: its output at a token largely
    re-encodes that token's identity (an extension of the embedding), so restoring it undoes part
    of the corruption whatever the fact is; ``min_layer=1`` looks past it. Works on a
    :class:`TraceSummary` or a plain curve (one value per layer).
    """
    c = np.nan_to_num(_curve(summary, kind), nan=-np.inf)
    lo = _check_min_layer(c, min_layer)
    width = int(width)
    if not 1 <= width <= c.size - lo:
        raise ValueError(f"width must be between 1 and the number of searchable layers ({c.size - lo}), got {width}")
    sums = np.convolve(c[lo:], np.ones(width), mode="valid")
    start = lo + int(np.argmax(sums))
    return list(range(start, start + width))


def subject_last_effects(summary: TraceSummary, kind: str = "mlp") -> np.ndarray:
    """``(prompts, layers)``: each traced prompt's indirect effect of ``kind`` at its subject's last
    token (the rows :func:`summarize` averages into the curve)."""
    if kind not in summary.kinds:
        raise ValueError(f"summary has no {kind!r} effects (kinds: {summary.kinds})")
    return np.stack([r.indirect_effect(kind)[r.subject_range[1]] for r in summary.per_prompt])


def window_stability(per_prompt, width: int = 5, min_layer: int = 0, n_resamples: int = 1000,
                     seed: int = 0) -> dict:
    """How firmly the prompts pick a layer window: resample the prompts (rows of ``per_prompt``,
    ``(prompts, layers)``) with replacement, average, and redo :func:`propose_critical_layers` and
    :func:`peak_layer` on every resample. Returns the windows' start layers and the peaks as
    ``{"window_starts": {start: share}, "peak_low", "peak_high"}`` (the peak's 2.5–97.5 % range)."""
    x = np.asarray(per_prompt, dtype=float)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"per_prompt must be (prompts, layers), got shape {x.shape}")
    rng = np.random.default_rng(seed)
    starts, peaks = [], []
    for _ in range(int(n_resamples)):
        mean = np.nanmean(x[rng.integers(0, x.shape[0], x.shape[0])], axis=0)
        starts.append(propose_critical_layers(mean, width=width, min_layer=min_layer)[0])
        peaks.append(peak_layer(mean, min_layer=min_layer))
    vals, counts = np.unique(starts, return_counts=True)
    return {"window_starts": {int(v): round(float(c) / len(starts), 4) for v, c in zip(vals, counts)},
            "peak_low": int(np.percentile(peaks, 2.5, method="lower")),
            "peak_high": int(np.percentile(peaks, 97.5, method="higher"))}
