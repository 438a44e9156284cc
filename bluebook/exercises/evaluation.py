"""Checkers for the exercises of notebook 07: the CounterFact efficacy rule and the intervals of
the replication tables."""
from __future__ import annotations

import math

import numpy as np

from bluebook.exercises.support import assert_number, assert_tuple, exercise
from bluebook.metrics import intervals
from bluebook.metrics.summary import summarize

__all__ = ["check_efficacy", "check_wilson_interval", "check_paired_bootstrap"]


# 07 · replication

@exercise("7.1", "CounterFact efficacy from probabilities")
def check_efficacy(fn, seed: int = 0) -> str:
    """``fn(p_new, p_true)`` (per record, a list of per-prompt probabilities) must return
    ``100 × mean over records of (mean over prompts of [p_new > p_true])``; compared with an explicit
    loop, and the aggregation with ``bluebook.metrics.summarize``."""
    rng = np.random.default_rng(seed)
    p_new, p_true = [], []
    for j in range(40):
        k = int(rng.integers(1, 4))                          # records have 1-3 prompts
        a, b = rng.uniform(0, 0.3, k), rng.uniform(0, 0.3, k)
        if j % 13 == 0:
            b[0] = a[0]                                      # a tie is a failure
        p_new.append(a.tolist())
        p_true.append(b.tolist())
    success = [sum(x > y for x, y in zip(a, b)) / len(a) for a, b in zip(p_new, p_true)]
    want = 100 * sum(success) / len(success)
    table = summarize([{"rewrite_success": s} for s in success])["efficacy"]
    assert abs(table - want) < 0.006, "checker bug: references disagree"
    got = assert_number(fn([list(a) for a in p_new], [list(b) for b in p_true]), want, "efficacy", atol=1e-9)
    return f"efficacy {got:.2f} on 40 records with 1–3 prompts each and a few ties (the table shows {table})"


@exercise("7.2", "Wilson score interval")
def check_wilson_interval(fn, seed: int = 0) -> str:
    """``fn(successes, n, confidence)`` must return the Wilson interval ``(low, high)`` of ``successes/n``;
    compared with ``bluebook.metrics.intervals.wilson`` (which calls statsmodels)."""
    cases = [(0, 10, 0.95), (10, 10, 0.95), (3, 20, 0.95), (57, 100, 0.9), (1, 2000, 0.99), (700, 1000, 0.95)]
    for k, n, conf in cases:
        ref = intervals.wilson(k, n, conf)
        low, high = assert_tuple(fn(k, n, conf), 2, "low, high")
        assert_number(low, ref.low, f"low end for {k}/{n} at {conf:.0%}", rtol=1e-7, atol=1e-10)
        assert_number(high, ref.high, f"high end for {k}/{n} at {conf:.0%}", rtol=1e-7, atol=1e-10)
    ref = intervals.wilson(0, 10)
    return (f"all {len(cases)} intervals match; 0/10 gives [{ref.low:.3f}, {ref.high:.3f}], "
            "where the Wald interval would collapse to [0, 0]")


@exercise("7.3", "paired bootstrap of BLUE minus base")
def check_paired_bootstrap(fn, seed: int = 0) -> str:
    """``fn(a, b, n_resamples, confidence, seed)`` must return ``(mean(a − b), low, high)`` from a paired
    percentile bootstrap; compared with ``intervals.paired_difference``, run with another resampling
    seed, so the ends may differ by resampling noise (the tolerance allows for it; resampling the two
    methods separately gives an interval far too wide and fails)."""
    rng = np.random.default_rng(seed)
    n = 150
    base = rng.random(n) < 0.55
    blue = np.where(base, rng.random(n) > 0.05, rng.random(n) < 0.25)     # strongly paired with base
    a, b = blue.astype(float), base.astype(float)
    for conf in (0.95, 0.8):
        ref = intervals.paired_difference(a, b, conf, n_resamples=2000, seed=seed + 1)
        diff, lo, hi = assert_tuple(fn(a.copy(), b.copy(), 2000, conf, seed), 3, "difference, low, high")
        diff = assert_number(diff, float(np.mean(a - b)), "difference mean(a − b)", atol=1e-12)
        lo, hi = float(lo), float(hi)
        tol = 0.25 * (ref.high - ref.low) / 2 + 1 / n
        assert lo <= diff <= hi, f"the interval [{lo:.4f}, {hi:.4f}] must contain the difference {diff:.4f}"
        assert math.isclose(lo, ref.low, abs_tol=tol) and math.isclose(hi, ref.high, abs_tol=tol), \
            (f"{conf:.0%} interval: yours [{lo:.4f}, {hi:.4f}], expected about [{ref.low:.4f}, {ref.high:.4f}] "
             f"(± {tol:.4f}); were the records resampled jointly?")
    return f"difference {diff:+.3f}; the 95% and 80% intervals agree with the paired reference within resampling noise"
