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
# # Solutions · 05 · The weight-deviation bound (Theorem 4.1, Lemma 4.3)
#
# Worked solutions to the exercises at the end of `05_bounds.py`. Each solution is followed by
# the cell that checks it (the same check the notebook runs), so running this notebook from top
# to bottom re-checks every solution.

# %%
import torch

import bluebook.exercises

# %% [markdown]
# ## Exercise 5.1 — Theorem 4.1: the deviation and its bound
#
# Write `theorem41_terms(R_direct, R_last, Q, distance)` returning the tuple `(deviation, bound)` of
# floats for `D = distance = L − l`: the weight deviation `‖(R^{l*} − R^L/(D+1)) Q‖₂` and the bound
# `(‖R^{l*} − R^L‖₂ + D·‖R^L‖₂)·‖Q‖₂`, all spectral norms (`torch.linalg.matrix_norm(X, ord=2)`). The checker
# compares the deviation with the difference of two MEMIT updates solved separately, the bound with
# `bluebook.analysis.theory.theorem41_bound`, and checks deviation ≤ bound.

# %%
def theorem41_terms(R_direct, R_last, Q, distance):
    """(deviation, bound) of Theorem 4.1; R_direct, R_last (d × n), Q (n × m), distance D = L − l."""
    D = int(distance)
    spectral = lambda X: float(torch.linalg.matrix_norm(X, ord=2))
    deviation = spectral((R_direct - R_last / (D + 1)) @ Q)
    bound = (spectral(R_direct - R_last) + D * spectral(R_last)) * spectral(Q)
    return deviation, bound


# %%
bluebook.exercises.run(bluebook.exercises.check_theorem41, theorem41_terms)

# %% [markdown]
# ## Exercise 5.2 — the envelope of ‖Q‖₂
#
# The notebook's §4 uses the envelope `‖Q‖₂ ≤ 1 / (2·√λ_min(λC + C_p))`, valid for every batch of keys. Write
# `q_envelope(C, lam, C_p)` returning it as a float (`C_p` may be `None`, meaning no earlier batches;
# `torch.linalg.eigvalsh` returns eigenvalues in ascending order). The checker compares with
# `bluebook.analysis.theory.q_envelope`, checks that `‖Q‖₂` stays below it for 30 random batches, and
# that the batch `k = √λ_min · u_min` (the eigenvector of the smallest eigenvalue) reaches it.

# %%
def q_envelope(C, lam, C_p=None):
    """1 / (2 √λ_min(λC + C_p)) as a float; C and C_p (m × m) float64 tensors, C_p may be None."""
    B = lam * C if C_p is None else lam * C + C_p
    lam_min = float(torch.linalg.eigvalsh(B)[0])
    return 0.5 / lam_min ** 0.5


# %%
bluebook.exercises.run(bluebook.exercises.check_q_envelope, q_envelope)
