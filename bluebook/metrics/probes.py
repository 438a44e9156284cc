"""Zero-shot classification probes: the model answers by the label word it finds most likely.

For each item the filled template is the prefix and every label word a candidate continuation
(``" " + word``, scored by :func:`~bluebook.metrics.scoring.continuation_nll`: mean token NLL);
the prediction is the label with the lowest NLL. This is the label-word scoring of the BLUE and
AlphaEdit general-capability evaluation, on the data that ships offline
(:mod:`bluebook.data.probes`).

Reported per probe: accuracy (Wilson interval), macro-F1 and Matthews correlation
(``scikit-learn``; percentile bootstrap intervals over items), the majority-class rate and
``above_chance``: whether the accuracy's interval lies above the majority-class rate. A probe at
chance before any edit measures nothing, and its changes after editing are noise.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter

import numpy as np

from bluebook.data.probes import Probe
from bluebook.metrics.intervals import CONFIDENCE, wilson
from bluebook.metrics.scoring import continuation_nll

__all__ = ["format_prompt", "label_nll", "content_free_nll", "evaluate_probe", "classification_scores", "probe_digest"]


def probe_digest(probe: Probe) -> str:
    """A short hash of what a probe's numbers depend on: template, label words and items."""
    blob = json.dumps([probe.template, probe.label_words, list(probe.items)], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


CONTENT_FREE = "N/A"


def format_prompt(tok, question: str, chat: bool = True) -> str:
    """The text the model reads before the label word: with ``chat=True`` and a tokenizer that has
    a chat template, ``question`` as one user turn followed by the assistant's turn opening
    (``apply_chat_template(..., add_generation_prompt=True)``); otherwise ``question + "\nAnswer:"``."""
    if chat and getattr(tok, "chat_template", None):
        return tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                       add_generation_prompt=True)
    return question + "\nAnswer:"


def label_nll(model, tok, probe: Probe, batch_size: int = 16, items=None, chat: bool = True) -> np.ndarray:
    """``(n_items, n_labels)`` mean token NLL of each label word after each item's prompt."""
    items = probe.items if items is None else items
    words = [probe.label_words[lab] for lab in probe.labels]
    prefixes, conts = [], []
    for it in items:
        p = format_prompt(tok, probe.prompt(it), chat)
        prefixes += [p] * len(words)
        conts += words
    nll, _ = continuation_nll(model, tok, prefixes, conts, batch_size=batch_size)
    return nll.numpy().reshape(len(items), len(words))


def content_free_nll(model, tok, probe: Probe, batch_size: int = 16, chat: bool = True) -> np.ndarray:
    """``(n_labels,)`` label-word NLL after the template filled with ``"N/A"`` in every field: the
    model's prior for each label word in this prompt, which :func:`evaluate_probe` subtracts
    (contextual calibration, Zhao et al., ICML 2021)."""
    fields = {k for it in probe.items[:1] for k in it if k.startswith("text")}
    return label_nll(model, tok, probe, batch_size, items=[{f: CONTENT_FREE for f in fields}], chat=chat)[0]


def _bootstrap(stat, y, p, confidence, n_resamples, seed) -> tuple[float, float]:
    from scipy.stats import bootstrap  # deferred: scipy.stats imports in ~0.9 s

    if len(set(y.tolist())) < 2 and len(set(p.tolist())) < 2:
        v = stat(y, p)
        return v, v
    with warnings.catch_warnings():         # a resample with one label makes scikit-learn warn; MCC is 0 there
        warnings.simplefilter("ignore")
        res = bootstrap((y, p), stat, paired=True, vectorized=False, confidence_level=confidence,
                        n_resamples=n_resamples, method="percentile", random_state=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return (lo, hi) if np.isfinite(lo) and np.isfinite(hi) else (float("nan"), float("nan"))


def classification_scores(y_true, y_pred, labels, confidence: float = CONFIDENCE, n_resamples: int = 1000,
                          seed: int = 0) -> dict:
    """Accuracy, macro-F1 and MCC of integer label indices, with intervals and the majority rate."""
    from sklearn.metrics import f1_score, matthews_corrcoef  # deferred: scikit-learn imports in ~1 s

    y, p = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    if y.shape != p.shape or y.size == 0:
        raise ValueError(f"classification_scores: need equal non-empty label arrays, got {y.shape} and {p.shape}")
    idx = list(range(len(labels)))

    def f1(a, b):
        return float(f1_score(a, b, labels=idx, average="macro", zero_division=0))

    def mcc(a, b):
        return float(matthews_corrcoef(a, b))

    acc = wilson(int((y == p).sum()), int(y.size), confidence)
    counts = Counter(y.tolist())
    majority = max(counts.values()) / y.size
    f1_v, mcc_v = f1(y, p), mcc(y, p)
    f1_lo, f1_hi = _bootstrap(f1, y, p, confidence, n_resamples, seed)
    mcc_lo, mcc_hi = _bootstrap(mcc, y, p, confidence, n_resamples, seed)
    return {"n": int(y.size), "accuracy": acc.as_dict(),
            "f1": {"value": round(f1_v, 4), "low": round(f1_lo, 4), "high": round(f1_hi, 4), "method": "bootstrap"},
            "mcc": {"value": round(mcc_v, 4), "low": round(mcc_lo, 4), "high": round(mcc_hi, 4), "method": "bootstrap"},
            "majority_rate": round(majority, 4), "above_chance": bool(acc.low > majority),
            "label_counts": {labels[k]: int(v) for k, v in sorted(counts.items())},
            "predicted_counts": {labels[k]: int(v) for k, v in sorted(Counter(p.tolist()).items())}}


def evaluate_probe(model, tok, probe: Probe, batch_size: int = 16, confidence: float = CONFIDENCE,
                   calibrate: bool = True, chat: bool = True) -> dict:
    """Score ``probe`` on the model as it is: :func:`classification_scores` plus the predictions
    (label indices, in item order, for paired comparisons between models).

    ``calibrate=True`` (default) predicts ``argmin_l NLL(l | item) − NLL(l | "N/A")``: a small
    model's strong preference for one label word whatever the input (measured on the embedded model:
    without calibration it answers "no" to 99 % of the MMLU statements) would otherwise leave every
    probe at the majority rate. The uncalibrated scores are reported too (``uncalibrated``).
    ``chat``: ask through the tokenizer's chat template when it has one (:func:`format_prompt`)."""
    nll = label_nll(model, tok, probe, batch_size=batch_size, chat=chat)
    labels = probe.labels
    y = np.array([labels.index(str(it["label"])) for it in probe.items])
    raw = nll.argmin(axis=1)
    pred = raw
    if calibrate:
        prior = content_free_nll(model, tok, probe, batch_size=batch_size, chat=chat)
        pred = (nll - prior[None, :]).argmin(axis=1)
    out = classification_scores(y, pred, labels, confidence)
    out.update(task=probe.task, substitute_for=probe.substitute_for, calibrated=bool(calibrate), chat=bool(chat),
               predictions=pred.astype(int).tolist())
    if calibrate:
        u = classification_scores(y, raw, labels, confidence, n_resamples=200)
        out["uncalibrated"] = {"accuracy": u["accuracy"], "mcc": u["mcc"], "predicted_counts": u["predicted_counts"]}
    return out
