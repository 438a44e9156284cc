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
# # Solutions · 02 · Locating facts: causal tracing and the critical layers
#
# Worked solutions to the exercises at the end of `02_locating.py`. Each solution is followed by
# the cell that checks it (the same check the notebook runs), so running this notebook from top
# to bottom re-checks every solution.

# %%
import numpy as np

import bluebook.exercises

# %% [markdown]
# ## Exercise 2.1 — the indirect effect of a restoration
#
# In causal tracing, `p_corrupted[s]` is p(target) in the corrupted run with noise draw `s` (shape `(S,)`)
# and `p_restored[t, l, s]` is p(target) in the same corrupted run with the clean state at token `t` and
# layer `l` put back (shape `(T, L, S)`). Write `indirect_effect(p_corrupted, p_restored)` returning the
# `(T, L)` array of indirect effects: the restored probability averaged over the noise draws, minus the
# corrupted probability averaged over the noise draws (the heatmaps of the notebook, less `low`). The
# checker compares with an explicit loop and with `TraceResult.indirect_effect`.

# %%
def indirect_effect(p_corrupted, p_restored):
    """(T, L) indirect effects from p_corrupted (S,) and p_restored (T, L, S), numpy arrays."""
    return np.asarray(p_restored).mean(axis=-1) - np.asarray(p_corrupted).mean()


# %%
bluebook.exercises.run(bluebook.exercises.check_indirect_effect, indirect_effect)

# %% [markdown]
# ## Exercise 2.2 — the best window of layers
#
# Given a curve (one mean indirect effect per layer, a numpy array), return the `width` consecutive
# layers, none below `min_layer`, whose effects have the largest sum, as a list of ints; on a tie take the
# earliest window. This is how the notebook proposes the critical-layer window. The checker compares with a
# brute-force search and with `bluebook.locate.propose_critical_layers` on random curves, a tie and a curve
# with a spike at layer 0.

# %%
def best_window(curve, width, min_layer=0):
    """The `width` consecutive layers (all >= min_layer) with the largest summed curve; earliest on ties."""
    best_start, best_sum = None, -np.inf
    for start in range(min_layer, len(curve) - width + 1):
        total = sum(curve[start:start + width])
        if total > best_sum:                      # strict: an equal sum later does not replace it
            best_start, best_sum = start, total
    return list(range(best_start, best_start + width))


# %%
bluebook.exercises.run(bluebook.exercises.check_best_window, best_window)
