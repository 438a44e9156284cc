"""Uncertainty of the reported numbers: Wilson intervals for rates, percentile bootstrap for means,
paired bootstrap for the difference of two methods on the same records.

Every table number in bluebook is a mean over records of a per-record value in [0, 1] (a success
flag, or the share of a record's prompts that succeed). When every per-record value is 0 or 1 the
mean is a binomial rate and :func:`wilson` is the interval (``statsmodels``' ``proportion_confint``
with ``method="wilson"``). Otherwise the records are resampled (:func:`bootstrap_mean`,
``scipy.stats.bootstrap``, percentile method). :func:`interval` picks between the two.
:func:`paired_difference` resamples records jointly, so that "BLUE minus its base on the same
records" gets an interval that accounts for the pairing.

All functions return numbers on the scale of their input (use ``scale=100`` for the ×100 tables).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

__all__ = ["Estimate", "wilson", "bootstrap_mean", "interval", "paired_difference"]

CONFIDENCE = 0.95
N_RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval: ``value`` in ``[low, high]`` at ``confidence``, from ``n``
    records, by ``method`` (``"wilson"``, ``"bootstrap"``, ``"paired-bootstrap"`` or ``"exact"``)."""
    value: float
    low: float
    high: float
    n: int
    method: str
    confidence: float = CONFIDENCE

    def as_dict(self, digits: int | None = 4) -> dict:
        d = asdict(self)
        if digits is not None:
            for k in ("value", "low", "high"):
                d[k] = round(float(d[k]), digits)
        return d

    def excludes(self, x: float) -> bool:
        """True when ``x`` lies outside the interval."""
        return x < self.low or x > self.high


def _clean(values: Sequence[float | None], name: str) -> np.ndarray:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if arr.size == 0:
        raise ValueError(f"{name}: no values (an empty list or only None)")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: values contain NaN or inf")
    return arr


def wilson(successes: int, n: int, confidence: float = CONFIDENCE, scale: float = 1.0) -> Estimate:
    """Wilson score interval of the rate ``successes / n``."""
    from statsmodels.stats.proportion import proportion_confint  # deferred: statsmodels imports in ~1 s

    if n < 1:
        raise ValueError(f"wilson: n must be >= 1, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"wilson: successes must be in [0, n={n}], got {successes}")
    lo, hi = proportion_confint(int(successes), int(n), alpha=1 - confidence, method="wilson")
    return Estimate(scale * successes / n, scale * float(lo), scale * float(hi), int(n), "wilson", confidence)


def bootstrap_mean(values: Sequence[float | None], confidence: float = CONFIDENCE, scale: float = 1.0,
                   n_resamples: int = N_RESAMPLES, seed: int = 0) -> Estimate:
    """Percentile bootstrap interval of the mean of ``values`` (``None`` entries are left out)."""
    from scipy.stats import bootstrap  # deferred: scipy.stats imports in ~0.9 s

    arr = _clean(values, "bootstrap_mean")
    mean = float(arr.mean())
    if arr.size == 1 or np.all(arr == arr[0]):
        # no spread to resample: the interval is the point (say so rather than pretend)
        return Estimate(scale * mean, scale * mean, scale * mean, int(arr.size), "exact", confidence)
    res = bootstrap((arr,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                    method="percentile", random_state=np.random.default_rng(seed))
    ci = res.confidence_interval
    return Estimate(scale * mean, scale * float(ci.low), scale * float(ci.high), int(arr.size), "bootstrap",
                    confidence)


def interval(values: Sequence[float | None], confidence: float = CONFIDENCE, scale: float = 1.0,
             seed: int = 0) -> Estimate:
    """The mean of per-record ``values`` in [0, 1] with its interval: Wilson when every value is 0
    or 1 (a binomial rate), the bootstrap otherwise."""
    arr = _clean(values, "interval")
    if np.isin(arr, (0.0, 1.0)).all():
        return wilson(int(arr.sum()), int(arr.size), confidence, scale)
    return bootstrap_mean(arr, confidence, scale, seed=seed)


def paired_difference(a: Sequence[float | None], b: Sequence[float | None], confidence: float = CONFIDENCE,
                      scale: float = 1.0, n_resamples: int = N_RESAMPLES, seed: int = 0) -> Estimate:
    """``mean(a) − mean(b)`` over records where both are given, with a paired percentile bootstrap
    interval (records resampled jointly). ``a`` and ``b`` must list the same records in one order."""
    if len(a) != len(b):
        raise ValueError(f"paired_difference: a has {len(a)} records, b has {len(b)}")
    keep = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if not keep:
        raise ValueError("paired_difference: no record has both values")
    d = _clean([x - y for x, y in keep], "paired_difference")
    est = bootstrap_mean(d, confidence, scale, n_resamples, seed)
    return Estimate(est.value, est.low, est.high, est.n, "paired-bootstrap" if est.method == "bootstrap"
                    else est.method, confidence)
