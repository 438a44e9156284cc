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
# # Solutions · 06 · BLUE: update only the boundary layers
#
# Worked solutions to the exercises at the end of `06_blue.py`. Each solution is followed by
# the cell that checks it (the same check the notebook runs), so running this notebook from top
# to bottom re-checks every solution.

# %%
import torch

import bluebook.exercises

# %% [markdown]
# ## Exercise 6.1 — which layers get which residual: BLUE vs MEMIT
#
# For `n_layers` critical layers, write `residual_shares(n_layers, method)` returning a list with one
# number per critical layer: the fraction of its current residual that layer is solved for, and 0 for a
# layer the method does not update. For `"memit"`: the residual `Z − h^L` is measured at the last layer
# and layer `i` takes `1/(N_L − i)` of it. For `"blue"`: only the first and last layers are updated, each
# with its whole, directly computed residual. The checker compares with `bluebook.core.distribute.Even`
# and `bluebook.core.distribute.Boundary`, the rules `bluebook.edit` uses.

# %%
def residual_shares(n_layers, method):
    """Per critical layer, the share of its current residual it is solved for (0: not updated)."""
    if method == "memit":
        return [1.0 / (n_layers - i) for i in range(n_layers)]
    if method == "blue":
        return [1.0] + [0.0] * (n_layers - 2) + [1.0]
    raise ValueError(f"unknown method {method!r}")


# %%
bluebook.exercises.run(bluebook.exercises.check_residual_shares, residual_shares)

# %% [markdown]
# ## Exercise 6.2 — AlphaEdit's null-space projector
#
# AlphaEdit projects every update onto the directions that the preserved keys `K₀` do not use. Write
# `null_space_projector(C, threshold)` for `C = K₀K₀ᵀ/N` (m × m): take the eigenvectors of `C` whose
# eigenvalues are below `threshold` (`torch.linalg.eigh`) as the columns of `Û` and return `P = Û Ûᵀ`.
# The checker builds a rank-deficient `C` and tests `P K₀ ≈ 0`, `P² = P = Pᵀ`, the rank of `P`, agreement
# with `bluebook.core.solvers.nullspace_projector`, and that AlphaEdit's update built with your `P` leaves
# the preserved keys alone (`Δ K₀ ≈ 0`).

# %%
def null_space_projector(C, threshold):
    """P = Û Ûᵀ over the eigenvectors of C (m × m) with eigenvalue < threshold."""
    eigenvalues, eigenvectors = torch.linalg.eigh(C)
    U0 = eigenvectors[:, eigenvalues < threshold]
    return U0 @ U0.T


# %%
bluebook.exercises.run(bluebook.exercises.check_null_space_projector, null_space_projector)
