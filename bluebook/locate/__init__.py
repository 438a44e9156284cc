"""Locating: causal tracing (ROME) and the critical-layer window."""
from bluebook.locate.tracing import (  # noqa: F401
    KINDS,
    ROW_LABELS,
    TraceResult,
    TraceSummary,
    as_template,
    subject_range,
    target_token_id,
    embedding_noise_scale,
    subject_noise,
    trace_prompt,
    known_ranks,
    known_rank,
    filter_known,
    summarize,
    trace_many,
    peak_layer,
    propose_critical_layers,
)

