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
# # Solutions · 01 · The MLP output projection as a key–value memory
#
# Worked solutions to the exercises at the end of `01_key_value_memory.py`. Each solution is followed by
# the cell that checks it (the same check the notebook runs), so running this notebook from top
# to bottom re-checks every solution.

# %%
import torch

import bluebook.exercises

# %% [markdown]
# ## Exercise 1.1 — least squares from the normal equations
#
# Stack keys as the columns of `K` (m × N, more keys than dimensions) and the values they should produce as
# the columns of `M` (d × N). Write `least_squares_weights(K, M)` returning the `Ŵ` (d × m) that minimises
# `‖Ŵ K − M‖²`, by solving the normal equations `Ŵ (K Kᵀ) = M Kᵀ` with `torch.linalg.solve` (no explicit
# inverse). The checker compares your `Ŵ` with `torch.linalg.lstsq` on random matrices and checks that the
# normal equations hold.

# %%
def least_squares_weights(K, M):
    """Ŵ (d × m) minimising ‖Ŵ K − M‖², for keys K (m × N) and values M (d × N), float64 tensors."""
    A = K @ K.T                                   # m × m, symmetric
    return torch.linalg.solve(A, K @ M.T).T       # Ŵ A = M Kᵀ  ⇔  A Ŵᵀ = K Mᵀ


# %%
bluebook.exercises.run(bluebook.exercises.check_least_squares, least_squares_weights)

# %% [markdown]
# ## Exercise 1.2 — keep the old key–value pairs, insert new ones
#
# The edit's objective before `λC` replaces `K₀K₀ᵀ`: keep what the weight `W` does on the old keys `K₀`
# (m × N₀) and make new keys `K₁` (m × n) produce new values `M₁` (d × n),
# `Ŵ = argmin ‖Ŵ K₀ − W K₀‖² + ‖Ŵ K₁ − M₁‖²`. Setting the gradient to zero gives
# `Ŵ (K₀K₀ᵀ + K₁K₁ᵀ) = W K₀K₀ᵀ + M₁K₁ᵀ`. Write `insert_new_facts(W, K0, K1, M1)` returning `Ŵ` itself
# (not the update `Ŵ − W`). The checker compares it with `torch.linalg.lstsq` on the stacked system
# `Ŵ [K₀, K₁] ≈ [W K₀, M₁]`.

# %%
def insert_new_facts(W, K0, K1, M1):
    """Ŵ (d × m) minimising ‖Ŵ K0 − W K0‖² + ‖Ŵ K1 − M1‖²; W (d × m), K0 (m × N0), K1 (m × n), M1 (d × n)."""
    A = K0 @ K0.T + K1 @ K1.T
    B = W @ K0 @ K0.T + M1 @ K1.T                 # Ŵ A = B
    return torch.linalg.solve(A, B.T).T


# %%
bluebook.exercises.run(bluebook.exercises.check_insert_facts, insert_new_facts)
