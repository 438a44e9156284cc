"""Evaluation: CounterFact and zsRE metrics (algorithms.md §9), fluency, consistency, general ability.

* :mod:`~bluebook.metrics.scoring`: teacher-forced continuation NLL and token accuracy;
* :mod:`~bluebook.metrics.counterfact` / :mod:`~bluebook.metrics.zsre`: the per-case metrics;
* :mod:`~bluebook.metrics.fluency`: generation and n-gram entropy;
* :mod:`~bluebook.metrics.consistency`: the tf-idf reference score;
* :mod:`~bluebook.metrics.summary`: table numbers (:func:`summarize`) and :func:`evaluate`;
* :mod:`~bluebook.metrics.ability`: general ability before/after editing;
* :mod:`~bluebook.metrics.suite` / :mod:`~bluebook.metrics.probes`: general ability along a run
  (perplexity, known facts, zero-shot classification probes);
* :mod:`~bluebook.metrics.intervals`: Wilson and bootstrap intervals; :mod:`~bluebook.metrics.claims`:
  a paper's claim, our number and a verdict.

Deviations from the reference code (all deliberate, see the docstrings for details)
-----------------------------------------------------------------------------------
* Candidate ids are appended to the prefix ids instead of re-tokenising ``f"{p} {o}"``
  (:func:`continuation_nll`); zsRE uses one teacher-forced forward per (prompt, answer) pair instead
  of one forward per answer token, on ids rather than decoded strings (:func:`evaluate_zsre`).
* BOS is handled generically (``add_special_tokens=False`` for continuations, ``tok(prefix)`` for
  prefixes); there is no "is this Llama?" test on the model path.
* Fluency word tokens come from ``word_tokenize(text, preserve_line=True)`` (no punkt data
  offline); see :func:`ngram_entropy` for the measured effect.
* Generation uses HF ``generate`` with left padding (the reference has its own right-padded
  sampling loop); the sampling distribution, the 100-token total length and the "do not stop at
  EOS" behaviour are the same (:func:`generate_texts`).
* Fluency is computed whenever ``generation=True``; the reference only generates when attribute
  snippets are loaded. Without the snippet/idf/vocab files, consistency is reported as
  unavailable (``None`` plus a note), never as 0.
"""
from bluebook.metrics.ability import (
    Shift,
    heldout_texts,
    known_fact_accuracy,
    known_fact_hits,
    lm_eval_available,
    perplexity,
    representation_shift,
    run_lm_eval,
    subject_states,
    token_nll,
)
from bluebook.metrics.consistency import (
    CONSISTENCY_UNAVAILABLE,
    ConsistencyResources,
    consistency_score,
    tfidf_cosine,
    tfidf_vector,
)
from bluebook.metrics.counterfact import add_generation_metrics, counterfact_case, evaluate_counterfact
from bluebook.metrics.fluency import (
    clean_text,
    fluency_score,
    generate_texts,
    ngram_entropy,
    text_ngram_entropy,
    word_tokens,
)
from bluebook.metrics.scoring import (
    continuation_ids,
    continuation_nll,
    joint_tokenization_agrees,
    logits_at,
    prefix_ids,
    token_accuracy,
)
from bluebook.metrics.summary import GENERATION_NOT_RUN, evaluate, harmonic_mean, summarize
from bluebook.metrics.zsre import evaluate_zsre, zsre_neighborhood_prompt

__all__ = [
    # scoring
    "continuation_nll", "token_accuracy", "joint_tokenization_agrees", "prefix_ids", "continuation_ids",
    "logits_at",
    # per-case metrics
    "evaluate_counterfact", "counterfact_case", "add_generation_metrics", "evaluate_zsre", "zsre_neighborhood_prompt",
    # fluency
    "text_ngram_entropy", "ngram_entropy", "fluency_score", "generate_texts", "word_tokens", "clean_text",
    # consistency
    "CONSISTENCY_UNAVAILABLE", "ConsistencyResources", "tfidf_vector", "tfidf_cosine", "consistency_score",
    # summary
    "GENERATION_NOT_RUN", "harmonic_mean", "summarize", "evaluate",
    # general ability
    "heldout_texts", "token_nll", "perplexity", "known_fact_hits", "known_fact_accuracy", "Shift",
    "subject_states", "representation_shift", "lm_eval_available", "run_lm_eval",
]
