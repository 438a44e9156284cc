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
# # Solutions · 03 · Closed-form edits
#
# Worked solutions to the exercises at the end of `03_closed_form_edits.py`. Each solution is followed by
# the cell that checks it (the same check the notebook runs), so running this notebook from top
# to bottom re-checks every solution.

# %%
import torch

import bluebook.exercises

# %% [markdown]
# ## Exercise 3.1 — MEMIT's closed-form update
#
# Without looking at the notebook's `memit_closed_form`, write `memit_update(K, R, C, lam)` returning
# `Δ = R Kᵀ (λC + K Kᵀ)⁻¹` (d × m) for keys `K` (m × n), residuals `R` (d × n), key second moment `C`
# (m × m) and weight `λ`. Use `torch.linalg.solve` (the matrix `λC + K Kᵀ` is symmetric). The checker
# compares your `Δ` with the stacked least-squares problem `Δ [√λ L_C, K] ≈ [0, R]` (`C = L_C L_Cᵀ`) and
# with `bluebook.core.solvers.memit_delta`, and checks that with a tiny λ the update maps the keys to the
# residuals, `Δ K ≈ R`.

# %%
def memit_update(K, R, C, lam):
    """MEMIT's Δ = R Kᵀ (λC + K Kᵀ)⁻¹ (d × m); K (m × n), R (d × n), C (m × m), float64 tensors."""
    A = lam * C + K @ K.T
    return torch.linalg.solve(A, K @ R.T).T       # (A⁻¹ K Rᵀ)ᵀ = R Kᵀ A⁻¹ since A is symmetric


# %%
bluebook.exercises.run(bluebook.exercises.check_memit_update, memit_update)

# %% [markdown]
# ## Exercise 3.2 — the rank-one (ROME-style) update
#
# Write `rank_one_update(k, r, C)` for one key `k` (m,), residual `r` (d,) and `C` (m × m), returning
# `Δ = r uᵀ / (uᵀ k)` with `u = C⁻¹k / ‖C⁻¹k‖` (d × m). The checker tests `Δ k = r`, that `Δ` has rank one,
# and that among all updates with `Δ k = r` yours has the least `tr(Δ C Δᵀ)`: it compares with MEMIT's
# one-key update rescaled by `(λ + kᵀC⁻¹k) / kᵀC⁻¹k` (Sherman–Morrison). (Using `u = k/‖k‖` passes the first
# two tests and fails the third.)

# %%
def rank_one_update(k, r, C):
    """Δ = r uᵀ / (uᵀ k) with u = C⁻¹k / ‖C⁻¹k‖ (d × m); k (m,), r (d,), C (m × m), float64 tensors."""
    Cik = torch.linalg.solve(C, k)
    u = Cik / Cik.norm()
    return torch.outer(r, u) / (u @ k)


# %%
bluebook.exercises.run(bluebook.exercises.check_rank_one_update, rank_one_update)
