"""General ability along a sequential run: one :class:`AbilitySuite` measured on the unedited model
and again at every evaluation point, always on the same texts, facts and probe examples.

Three measurements, each with its uncertainty (:mod:`bluebook.metrics.intervals`):

* **held-out perplexity** on Wikipedia lead sections the layer statistics never saw
  (:func:`~bluebook.metrics.ability.heldout_texts`), with a bootstrap interval over texts;
* **known facts**: held-out CounterFact facts (records 2,500–7,499, never in the shipped edit
  subset; :func:`~bluebook.data.probes.load_fact_pool`) whose true object the unedited model
  predicts (first token, greedy). They are chosen once, on the unedited model
  (:meth:`AbilitySuite.prepare`), so the accuracy starts at 1 and its fall is forgetting;
* **classification probes** (:mod:`bluebook.metrics.probes`): zero-shot label-word scoring on real
  labelled text, accuracy / macro-F1 / MCC with intervals.

The suite's :meth:`~AbilitySuite.config` names everything a number depends on; a run re-measures an
evaluation point whose stored config differs.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from bluebook.data.probes import load_fact_pool, load_probe
from bluebook.metrics.ability import heldout_texts, known_fact_hits, token_nll
from bluebook.metrics.intervals import CONFIDENCE, wilson
from bluebook.metrics.probes import evaluate_probe, probe_digest

__all__ = ["AbilitySuite", "perplexity_estimate"]


def perplexity_estimate(nll: list, confidence: float = CONFIDENCE, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Token-weighted perplexity ``exp(Σ NLL / Σ tokens)`` of per-text NLL vectors, with a percentile
    bootstrap interval that resamples whole texts."""
    from scipy.stats import bootstrap  # deferred: scipy.stats imports in ~0.9 s

    sums = np.array([float(v.sum()) for v in nll if v.numel()], dtype=np.float64)
    counts = np.array([int(v.numel()) for v in nll if v.numel()], dtype=np.float64)
    if sums.size == 0:
        raise ValueError("perplexity_estimate: no predicted tokens")
    value = math.exp(sums.sum() / counts.sum())
    if sums.size < 2:
        return {"value": value, "low": value, "high": value, "n_texts": int(sums.size), "tokens": int(counts.sum())}
    res = bootstrap((sums, counts), lambda s, c, axis=-1: np.exp(s.sum(axis) / c.sum(axis)), paired=True,
                    vectorized=True, confidence_level=confidence, n_resamples=n_resamples, method="percentile",
                    random_state=np.random.default_rng(seed))
    return {"value": value, "low": float(res.confidence_interval.low), "high": float(res.confidence_interval.high),
            "n_texts": int(sums.size), "tokens": int(counts.sum()),
            # per text, for paired comparisons of two models on the same texts
            "text_mean_nll": [round(float(s / c), 6) for s, c in zip(sums, counts)]}


@dataclass(frozen=True)
class AbilitySuite:
    """What general ability is measured at each evaluation point.

    ``perplexity_texts`` held-out texts truncated to ``perplexity_max_len`` tokens; up to
    ``known_facts`` known facts from the shipped CounterFact records that the run does not edit
    (0: none); ``probes``: names of shipped classification probes (``bluebook.metrics.probes``),
    ``probe_n`` examples each (``None``: all).
    """
    perplexity_texts: int = 100
    perplexity_max_len: int = 128
    known_facts: int = 100
    probes: tuple[str, ...] = field(default_factory=tuple)
    probe_n: int | None = 200
    calibrate: bool = True
    chat: bool = True
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self):
        for name in ("perplexity_texts", "perplexity_max_len", "known_facts", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"AbilitySuite.{name} must be a non-negative int, got {v!r}")
        if self.probe_n is not None and (not isinstance(self.probe_n, int) or self.probe_n < 1):
            raise ValueError(f"AbilitySuite.probe_n must be a positive int or None, got {self.probe_n!r}")
        object.__setattr__(self, "probes", tuple(self.probes))
        for p in self.probes:
            load_probe(p, n=1)                          # unknown names fail before any work

    def config(self) -> dict:
        """What the numbers depend on, including a hash of each probe's items and template (a
        rebuilt probe file is measured again)."""
        d = asdict(self)
        d["probes"] = list(self.probes)
        d.pop("batch_size")                            # does not change any number
        if self.probes:
            d["probe_digests"] = {p: probe_digest(load_probe(p, n=self.probe_n)) for p in self.probes}
        return d

    def prepare(self, model, tok, exclude_case_ids=()) -> dict:
        """On the **unedited** model: choose the known facts (records not in ``exclude_case_ids``
        whose true object's first token is the greedy prediction). Returns the reference that
        :meth:`evaluate` needs; store it with the run."""
        if self.known_facts == 0:
            return {"known_case_ids": []}
        skip = {str(c) for c in exclude_case_ids}
        pool = [r for r in load_fact_pool() if str(r.case_id) not in skip]
        hits = known_fact_hits(model, tok, pool, batch_size=64)
        known = [r.case_id for r, h in zip(pool, hits) if h][:self.known_facts]
        return {"known_case_ids": known, "pool": len(pool), "known_in_pool": int(sum(hits))}

    def evaluate(self, model, tok, reference: dict) -> dict:
        """Every measurement of the suite on the model as it is now."""
        out: dict = {"config": self.config()}
        if self.perplexity_texts:
            texts = heldout_texts(n=self.perplexity_texts, seed=self.seed)
            nll = token_nll(model, tok, texts, max_len=self.perplexity_max_len, batch_size=self.batch_size)
            out["perplexity"] = perplexity_estimate(nll, seed=self.seed)
        ids = reference.get("known_case_ids") or []
        if ids:
            by_id = {r.case_id: r for r in load_fact_pool()}
            hits = known_fact_hits(model, tok, [by_id[i] for i in ids], batch_size=64)
            out["known_facts"] = dict(wilson(int(sum(hits)), len(hits)).as_dict(), case_ids=list(ids),
                                      hits=[int(h) for h in hits])   # per fact, for paired comparisons
        for name in self.probes:
            out.setdefault("probes", {})[name] = evaluate_probe(model, tok, load_probe(name, n=self.probe_n),
                                                                batch_size=self.batch_size, calibrate=self.calibrate,
                                                                chat=self.chat)
        return out
