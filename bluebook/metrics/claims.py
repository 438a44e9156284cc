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

import numpy as np

from bluebook.metrics.intervals import bootstrap_mean, interval, paired_difference, wilson

__all__ = ["VERDICTS", "SMALL_SAMPLE", "difference_verdict", "separation_verdict", "claim", "threshold_claim",
           "paired_claim", "correlation_claim", "all_hold_claim", "decide", "claims_frame", "check_claims"]

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


def claim(paper: str, ours, interval, n: int | None, verdict: str, evidence: str, note: str = "",
          quantity: str | None = None) -> dict:
    """One entry of ``metrics["claims"]`` (checked: the verdict and the evidence tier are known words).
    ``quantity`` names what ``ours`` is when it is not the claimed quantity itself: ``"difference"``
    (a paired difference), ``"correlation"`` (a rank correlation)."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    if evidence not in ("live", "recorded"):
        raise ValueError(f"evidence must be 'live' or 'recorded', got {evidence!r}")
    if interval is not None and (len(interval) != 2 or interval[0] > interval[1]):
        raise ValueError(f"interval must be [low, high], got {interval!r}")
    out = {"paper": paper, "ours": ours, "interval": None if interval is None else [float(interval[0]),
                                                                                   float(interval[1])],
           "n": n, "verdict": verdict, "evidence": evidence, "note": note}
    if quantity is not None:
        out["quantity"] = quantity
    return out


# --------------------------------------------------------------------------------------------
# claims computed from per-record values

SMALL_SAMPLE = 50   # below this many records a live claim is labelled a small sample


def _label(note: str, n: int | None, evidence: str) -> str:
    if evidence == "live" and n is not None and n < SMALL_SAMPLE:
        tag = f"small live sample (n={n}): illustrates the computation, not the paper's effect size"
        return f"{tag}; {note}" if note else tag
    return note


def threshold_claim(paper: str, values, threshold: float, direction: int = 1, evidence: str = "live",
                    note: str = "", scale: float = 1.0, rate: bool | None = None) -> dict:
    """"The mean of ``values`` is above ``threshold``" (``direction=1``; ``-1``: below), from the
    interval of the mean: Wilson when the values are success flags, the bootstrap otherwise.
    ``rate=None`` decides from the values (all 0 or 1: flags); pass ``rate=False`` for counts or
    measurements that merely happen to be 0 or 1 (e.g. step counts that are all 0).
    ``threshold`` is on the scale of the result (``scale`` times the values)."""
    vals = list(values)
    est = bootstrap_mean(vals, scale=scale) if rate is False else interval(vals, scale=scale)
    verdict = difference_verdict(est.low - threshold, est.high - threshold, direction)
    return claim(paper, round(est.value, 6), (est.low, est.high), est.n, verdict, evidence,
                 _label(note, est.n, evidence))


def paired_claim(paper: str, a, b, direction: int = 1, evidence: str = "live", note: str = "",
                 scale: float = 1.0, margin: float = 0.0) -> dict:
    """"``a`` is higher than ``b`` on the same records" (``direction=1``; ``-1``: lower): ``ours`` is
    ``mean(a − b)`` with a paired bootstrap interval (:func:`~bluebook.metrics.intervals.paired_difference`)."""
    est = paired_difference(list(a), list(b), scale=scale)
    verdict = difference_verdict(est.low, est.high, direction, margin)
    return claim(paper, round(est.value, 6), (est.low, est.high), est.n, verdict, evidence,
                 _label(note, est.n, evidence), quantity="difference")


def correlation_claim(paper: str, x, y, direction: int = 1, evidence: str = "live", note: str = "",
                      n_resamples: int = 2000, seed: int = 0) -> dict:
    """"``y`` rises with ``x``" (``direction=1``; ``-1``: falls): ``ours`` is Spearman's rank
    correlation, its interval a percentile bootstrap over the (x, y) pairs resampled jointly
    (``scipy.stats``). Pairs that share a request or a layer are not independent; say so in ``note``."""
    from scipy.stats import bootstrap, spearmanr  # deferred: scipy.stats imports in ~0.9 s

    x, y = np.asarray(list(x), dtype=float), np.asarray(list(y), dtype=float)
    if x.shape != y.shape or x.size < 3:
        raise ValueError(f"correlation_claim: need two equally long samples of at least 3, got {x.size} and {y.size}")
    if np.unique(x).size < 2 or np.unique(y).size < 2:
        raise ValueError("correlation_claim: x or y is constant; a rank correlation is undefined")
    rho = float(spearmanr(x, y).statistic)

    def stat(a, b):
        r = spearmanr(a, b).statistic
        return 0.0 if np.isnan(r) else r        # a resample with a constant side carries no ordering

    res = bootstrap((x, y), stat, paired=True, vectorized=False, confidence_level=0.95, n_resamples=n_resamples,
                    method="percentile", random_state=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    lo, hi = min(lo, rho), max(hi, rho)
    return claim(paper, round(rho, 6), (lo, hi), int(x.size), difference_verdict(lo, hi, direction), evidence,
                 _label(note, int(x.size), evidence), quantity="correlation")


def all_hold_claim(paper: str, flags, evidence: str = "live", note: str = "") -> dict:
    """A statement that must hold for *every* case (a theorem, an identity): ``ours`` is the fraction
    of cases where it holds, with its Wilson interval; one counterexample is a disagreement, and no
    counterexample is an agreement (a test of a proof, not an estimate of a rate)."""
    flags = [bool(f) for f in flags]
    if not flags:
        raise ValueError("all_hold_claim: no cases")
    est = wilson(sum(flags), len(flags))
    return claim(paper, round(est.value, 6), (est.low, est.high), est.n, "agrees" if all(flags) else "disagrees",
                 evidence, _label(note, est.n, evidence))


def _small(c: dict) -> bool:
    return c.get("n") is not None and c["n"] < SMALL_SAMPLE


def decide(live: dict | None, recorded: dict | None = None) -> dict:
    """One claim from its two tiers of evidence. Without a recorded claim the live one stands. With
    one, the recorded verdict is used when the live run cannot carry the claim — its interval is
    inconclusive, or it is a small sample (n < :data:`SMALL_SAMPLE`) beside a larger recorded one —
    and the note says so; otherwise the live verdict stands. Both tiers are kept under ``"live"``
    and ``"recorded"``."""
    if live is None and recorded is None:
        raise ValueError("decide: neither a live nor a recorded claim")
    if recorded is not None and recorded.get("ours") is None and live is not None:
        recorded_note, recorded = recorded, None      # "not measured yet": no evidence, but say so below
    else:
        recorded_note = None
    use_recorded = recorded is not None and (
        live is None or live["verdict"] == "inconclusive"
        or (_small(live) and (recorded.get("n") or 0) > (live.get("n") or 0)))
    if not use_recorded:
        out = dict(live)
    else:
        out = dict(recorded)
        if live is not None:
            why = "inconclusive" if live["verdict"] == "inconclusive" else "a small sample"
            out["note"] = (f"live run {why} (n={live['n']}, {live['verdict']}); verdict from the recorded evidence"
                           + (f"; {recorded['note']}" if recorded.get("note") else ""))
    if recorded_note is not None:
        out["note"] = (out.get("note") or "") + f"; recorded tier: {recorded_note.get('note') or 'not measured'}"
        recorded = recorded_note
    out["live"], out["recorded"] = live, recorded
    return out


def claims_frame(claims: dict):
    """The claims as a pandas table (one row per claim; the interval as ``low``/``high``)."""
    import pandas as pd  # deferred: ~0.4 s, for this table only

    rows = []
    for name, c in claims.items():
        iv = c.get("interval") or (None, None)
        rows.append({"claim": name, "paper": c["paper"], "ours": c["ours"], "low": iv[0], "high": iv[1],
                     "n": c["n"], "verdict": c["verdict"], "evidence": c["evidence"], "note": c.get("note", "")})
    return pd.DataFrame(rows).set_index("claim") if rows else pd.DataFrame(
        columns=["paper", "ours", "low", "high", "n", "verdict", "evidence", "note"])


def check_claims(claims: dict) -> None:
    """Raise ``ValueError`` naming the claim and field unless every entry has the documented shape."""
    if not isinstance(claims, dict) or not claims:
        raise ValueError(f"claims must be a non-empty dict, got {type(claims).__name__} {claims!r:.80}")
    for name, c in claims.items():
        for key in ("paper", "ours", "interval", "n", "verdict", "evidence"):
            if key not in c:
                raise ValueError(f"claim {name!r} has no {key!r}")
        if c["verdict"] not in VERDICTS:
            raise ValueError(f"claim {name!r}: verdict {c['verdict']!r} is not one of {VERDICTS}")
        if c["evidence"] not in ("live", "recorded"):
            raise ValueError(f"claim {name!r}: evidence {c['evidence']!r} is not 'live' or 'recorded'")
        iv = c["interval"]
        if iv is not None and (len(iv) != 2 or not iv[0] <= iv[1]):
            raise ValueError(f"claim {name!r}: interval {iv!r} is not [low, high]")
