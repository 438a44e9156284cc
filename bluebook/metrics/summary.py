"""Table numbers from per-case metrics (:func:`summarize`), and :func:`evaluate`, which runs the
per-case metrics of a dataset and summarises them.

Summary names and the reference keys
------------------------------------
``summarize`` reports friendly names; per-case dicts keep the reference names (without the
``pre_``/``post_`` prefix that ``experiments/summarize.py`` adds for before/after editing).

| bluebook summary key       | reference summary key       | per-case key it averages             |
|----------------------------|-----------------------------|--------------------------------------|
| efficacy (CounterFact)     | post_rewrite_success        | rewrite_success                      |
| generalization (CF)        | post_paraphrase_success     | paraphrase_success                   |
| specificity (CF)           | post_neighborhood_success   | neighborhood_success                 |
| efficacy_magnitude         | post_rewrite_diff           | rewrite_diff                         |
| generalization_magnitude   | post_paraphrase_diff        | paraphrase_diff                      |
| specificity_magnitude      | post_neighborhood_diff      | neighborhood_diff                    |
| score                      | post_score                  | harmonic mean of the three successes |
| fluency                    | post_ngram_entropy          | ngram_entropy                        |
| consistency                | post_reference_score        | reference_score                      |
| efficacy (zsRE)            | post_rewrite_acc            | rewrite_acc                          |
| generalization (zsRE)      | post_paraphrase_acc         | paraphrase_acc                       |
| specificity (zsRE)         | post_neighborhood_acc       | neighborhood_acc                     |

Every summary value is ``round(100 * mean over cases, 2)``; ``<name>_std`` is
``round(100 * std over cases, 2)`` (population std, as ``np.std``). ``score`` is the harmonic mean
of the three already-rounded ×100 success means (as the reference does), rounded to 2 dp.
Per-case values that are ``None`` (for example a case without paraphrase prompts) are left out of
the mean; ``NaN`` values propagate, as in the reference.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from bluebook.metrics.consistency import CONSISTENCY_UNAVAILABLE
from bluebook.metrics.counterfact import evaluate_counterfact
from bluebook.metrics.zsre import evaluate_zsre

__all__ = ["GENERATION_NOT_RUN", "harmonic_mean", "summarize", "evaluate"]

GENERATION_NOT_RUN = "unavailable: generation was not run (generation=False)"
"""The ``fluency_note``/``consistency_note`` of a CounterFact summary of cases evaluated without generation."""


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean; 0 when any value is 0 (the limit, as ``scipy.stats.hmean`` returns)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("harmonic mean of an empty list")
    if any(v < 0 for v in vals):
        raise ValueError(f"harmonic mean needs non-negative values, got {vals}")
    if any(v == 0 for v in vals):
        return 0.0
    return len(vals) / sum(1.0 / v for v in vals)


def _agg(cases: Sequence[dict], key: str) -> tuple[float, float] | None:
    vals = [c[key] for c in cases if c.get(key) is not None]
    if not vals:
        return None
    arr = np.asarray(vals, dtype=np.float64)
    return round(float(arr.mean()) * 100, 2), round(float(arr.std()) * 100, 2)


def summarize(cases: Sequence[dict], dataset: str = "counterfact") -> dict:
    """Table numbers: ``round(100 × mean over cases, 2)`` and ``<name>_std``.

    CounterFact: ``efficacy``, ``generalization``, ``specificity`` (success rates),
    ``efficacy_magnitude``, ``generalization_magnitude``, ``specificity_magnitude`` (``*_diff``),
    ``score`` (harmonic mean of the three success rates), ``fluency`` and ``consistency``.
    zsRE: ``efficacy``, ``generalization``, ``specificity`` are the token accuracies.
    See the module docstring for the mapping to the reference keys.

    Generation metrics that were not computed are ``None`` with a ``<name>_note`` saying why:
    ``"consistency": None, "consistency_note": CONSISTENCY_UNAVAILABLE`` when the snippet/idf/vocab
    files were not supplied (never 0).
    """
    dataset = dataset.lower()
    if dataset in ("mcf", "cf", "multi_counterfact"):
        dataset = "counterfact"
    if dataset not in ("counterfact", "zsre"):
        raise ValueError(f"dataset must be 'counterfact' or 'zsre', got {dataset!r}")
    cases = list(cases)
    out: dict = {"dataset": dataset, "n_cases": len(cases)}

    def put(name, key):
        got = _agg(cases, key)
        out[name] = None if got is None else got[0]
        out[f"{name}_std"] = None if got is None else got[1]

    if dataset == "zsre":
        for name, key in (("efficacy", "rewrite_acc"), ("generalization", "paraphrase_acc"),
                          ("specificity", "neighborhood_acc")):
            put(name, key)
        return out

    for name, key in (("efficacy", "rewrite_success"), ("generalization", "paraphrase_success"),
                      ("specificity", "neighborhood_success"), ("efficacy_magnitude", "rewrite_diff"),
                      ("generalization_magnitude", "paraphrase_diff"),
                      ("specificity_magnitude", "neighborhood_diff")):
        put(name, key)
    three = [out["efficacy"], out["generalization"], out["specificity"]]
    out["score"] = None if any(v is None for v in three) else round(harmonic_mean(three), 2)

    generated = any("ngram_entropy" in c for c in cases)
    if not generated:
        out.update(fluency=None, fluency_note=GENERATION_NOT_RUN,
                   consistency=None, consistency_note=GENERATION_NOT_RUN)
        return out
    put("fluency", "ngram_entropy")
    if out["fluency"] is None:
        out["fluency_note"] = "unavailable: no case had generation_prompts"
    put("consistency", "reference_score")
    if out["consistency"] is None:
        out["consistency_note"] = CONSISTENCY_UNAVAILABLE
    return out


def evaluate(model, tok, requests, dataset: str = "counterfact", **kw) -> tuple[list[dict], dict]:
    """Evaluate ``requests`` on ``model`` as it is now; returns ``(cases, summary)``.

    ``dataset="counterfact"`` uses :func:`evaluate_counterfact` (keyword arguments such as
    ``batch_size``, ``generation``, ``resources`` are passed on); ``"zsre"`` uses
    :func:`evaluate_zsre`.
    """
    d = dataset.lower()
    if d in ("counterfact", "mcf", "cf", "multi_counterfact"):
        cases = evaluate_counterfact(model, tok, requests, **kw)
        return cases, summarize(cases, "counterfact")
    if d == "zsre":
        cases = evaluate_zsre(model, tok, requests, **kw)
        return cases, summarize(cases, "zsre")
    raise ValueError(f"dataset must be 'counterfact' or 'zsre', got {dataset!r}")
