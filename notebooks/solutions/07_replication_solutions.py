# ---
# jupyter:
#   jupytext:
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Solutions · 07 · Replication tables
#
# Worked solutions to the exercises at the end of `07_replication.py`. Each solution is followed by
# the cell that checks it (the same check the notebook runs), so running this notebook from top
# to bottom re-checks every solution.

# %%
import math
from statistics import NormalDist

import numpy as np

import bluebook.exercises

# %% [markdown]
# ## Exercise 7.1 — CounterFact efficacy from probabilities
#
# A CounterFact record counts as a success on a prompt when the model gives the new object a higher
# probability than the true one (a tie is a failure); a record's score is the mean over its prompts, and
# the table number is 100 × the mean over records. Write `efficacy_score(p_new, p_true)`, where `p_new[j]`
# and `p_true[j]` are lists of per-prompt probabilities of record `j` (records may have different numbers
# of prompts, as paraphrases do). The checker compares with an explicit loop on 40 random records.

# %%
def efficacy_score(p_new, p_true):
    """100 × mean over records of the share of the record's prompts where p_new > p_true."""
    per_record = [np.mean([a > b for a, b in zip(new, true)]) for new, true in zip(p_new, p_true)]
    return 100.0 * float(np.mean(per_record))


# %%
bluebook.exercises.run(bluebook.exercises.check_efficacy, efficacy_score)

# %% [markdown]
# ## Exercise 7.2 — the Wilson score interval
#
# With `p̂ = successes/n` and `z = Φ⁻¹((1 + confidence)/2)` (`statistics.NormalDist().inv_cdf`), the
# Wilson interval is `centre ± half` with `centre = (p̂ + z²/(2n)) / (1 + z²/n)` and
# `half = z·√(p̂(1 − p̂)/n + z²/(4n²)) / (1 + z²/n)`. Write `wilson_interval(successes, n, confidence)`
# returning `(low, high)`. The checker compares with `bluebook.metrics.intervals.wilson` (statsmodels),
# including 0/10 and 10/10, where the naive `p̂ ± z·√(p̂(1 − p̂)/n)` collapses to a point.

# %%
def wilson_interval(successes, n, confidence=0.95):
    """(low, high) Wilson score interval of the rate successes / n."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return centre - half, centre + half


# %%
bluebook.exercises.run(bluebook.exercises.check_wilson_interval, wilson_interval)

# %% [markdown]
# ## Exercise 7.3 — a paired bootstrap of BLUE minus base
#
# `a[j]` and `b[j]` are per-record scores of BLUE and its base method on the same record `j`. Write
# `paired_bootstrap(a, b, n_resamples, confidence, seed)` returning `(mean(a − b), low, high)`: draw
# `n_resamples` resamples of the record indices with replacement (`np.random.default_rng(seed)`), take the
# mean of `a − b` on each, and return the `(1 − confidence)/2` and `(1 + confidence)/2` quantiles of those
# means. Resample the records jointly: the same records for both methods. The checker compares with
# `bluebook.metrics.intervals.paired_difference` (within resampling noise) on strongly paired data, where
# resampling `a` and `b` separately gives an interval far too wide.

# %%
def paired_bootstrap(a, b, n_resamples=2000, confidence=0.95, seed=0):
    """(mean(a − b), low, high): paired percentile bootstrap over records; a, b numpy arrays of equal length."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_resamples, d.size))
    means = d[idx].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(d.mean()), float(low), float(high)


# %%
bluebook.exercises.run(bluebook.exercises.check_paired_bootstrap, paired_bootstrap)
