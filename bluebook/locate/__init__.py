"""Locating facts: causal tracing (ROME) and the critical-layer window.

* :mod:`bluebook.locate.prompts` — template, subject token range, target token id, subject noise;
* :mod:`bluebook.locate.trace` — the causal trace of one prompt (:func:`trace_prompt`);
* :mod:`bluebook.locate.known` — which facts the model knows (:func:`filter_known`);
* :mod:`bluebook.locate.summary` — averages over prompts and the proposed critical layers.
"""
from bluebook.locate.known import filter_known, known_rank, known_ranks
from bluebook.locate.prompts import (
    as_template,
    as_triple,
    embedding_noise_scale,
    subject_noise,
    subject_range,
    target_token_id,
    token_ids,
)
from bluebook.locate.summary import (
    ROW_LABELS,
    TraceSummary,
    peak_layer,
    propose_critical_layers,
    subject_last_effects,
    summarize,
    trace_many,
    window_stability,
)
from bluebook.locate.trace import KINDS, TraceResult, trace_prompt

__all__ = [
    "KINDS", "ROW_LABELS", "TraceResult", "TraceSummary",
    "as_template", "as_triple", "token_ids", "subject_range", "target_token_id", "embedding_noise_scale",
    "subject_noise", "trace_prompt", "known_ranks", "known_rank", "filter_known", "summarize", "trace_many",
    "peak_layer", "propose_critical_layers", "subject_last_effects", "window_stability",
]
