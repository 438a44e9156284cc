"""A paper's claim, our number, its uncertainty and a verdict: the one shape every notebook records
in ``metrics.json`` under ``claims``.

``{name: {"paper", "ours", "interval", "n", "verdict", "evidence", "note"}}``, ``verdict`` one of
:data:`VERDICTS`. The verdict is read off an interval, never off a point estimate:

* a **difference** (ours minus the comparison, in the direction the paper claims) *agrees* when its
  interval lies entirely on the claimed side of 0 (or of ``margin``), *disagrees* when it lies
  entirely on the other side, and is *inconclusive* when it covers 0;
* two **separate intervals** (no pairing available) are compared the same way: agreement needs
  them not to overlap.

``evidence`` says where the number comes from: ``"live"`` (computed in this notebook run, often a
small sample) or ``"recorded"`` (committed full-size results, with their provenance).
"""
from __future__ import annotations

__all__ = ["VERDICTS", "difference_verdict", "separation_verdict", "claim"]

VERDICTS = ("agrees", "disagrees", "inconclusive")


def difference_verdict(low: float, high: float, direction: int = 1, margin: float = 0.0) -> str:
    """Verdict on "the difference is positive" (``direction=1``) or "negative" (``-1``) from its
    interval ``[low, high]``."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be 1 or -1, got {direction!r}")
    if low > high:
        raise ValueError(f"interval low={low} is above high={high}")
    lo, hi = (low, high) if direction == 1 else (-high, -low)
    if lo > margin:
        return "agrees"
    if hi < margin:
        return "disagrees"
    return "inconclusive"


def separation_verdict(ours: dict, other: dict, direction: int = 1) -> str:
    """Verdict on "ours is higher than other" (``direction=1``; ``-1``: lower) from two intervals
    ``{"low", "high"}`` without pairing: agrees only when they do not overlap."""
    if direction == 1:
        if ours["low"] > other["high"]:
            return "agrees"
        if ours["high"] < other["low"]:
            return "disagrees"
    else:
        if ours["high"] < other["low"]:
            return "agrees"
        if ours["low"] > other["high"]:
            return "disagrees"
    return "inconclusive"


def claim(paper: str, ours, interval, n: int | None, verdict: str, evidence: str, note: str = "") -> dict:
    """One entry of ``metrics["claims"]`` (checked: the verdict and the evidence tier are known words)."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    if evidence not in ("live", "recorded"):
        raise ValueError(f"evidence must be 'live' or 'recorded', got {evidence!r}")
    if interval is not None and (len(interval) != 2 or interval[0] > interval[1]):
        raise ValueError(f"interval must be [low, high], got {interval!r}")
    return {"paper": paper, "ours": ours, "interval": None if interval is None else [float(interval[0]),
                                                                                    float(interval[1])],
            "n": n, "verdict": verdict, "evidence": evidence, "note": note}
