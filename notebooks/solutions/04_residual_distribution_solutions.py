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
# # Solutions · 04 · Why residual distribution fails
#
# Worked solutions to the exercises at the end of `04_residual_distribution.py`. Each solution is followed by
# the cell that checks it (the same check the notebook runs), so running this notebook from top
# to bottom re-checks every solution.

# %%
import torch

import bluebook.exercises

# %% [markdown]
# ## Exercise 4.1 — MEMIT's distributed residuals
#
# MEMIT computes the residual `δ^L` at the last critical layer and gives the critical layer with index
# `i` (0-based, `N_L` layers) the share `δ^L / (N_L − i)`. Write `distributed_residuals(delta_L, n_layers)`
# returning an `(N_L, d)` tensor whose row `i` is that share. The checker compares with MEMIT's rule in
# `bluebook.core.distribute.Even` and with `bluebook.analysis.theory.distributed_residual`.

# %%
def distributed_residuals(delta_L, n_layers):
    """(n_layers, d) tensor: row i is δ^L / (n_layers − i); delta_L is a (d,) tensor."""
    return torch.stack([delta_L / (n_layers - i) for i in range(n_layers)])


# %%
bluebook.exercises.run(bluebook.exercises.check_distributed_residuals, distributed_residuals)

# %% [markdown]
# ## Exercise 4.2 — cosine, deviation and distribution error
#
# Given `delta_L` (d,) and `direct` (N_L × d, row `i` the residual `δ^l` optimised directly at layer
# `l_i`; the last row is `δ^L`), return the three per-layer measures of the notebook's §3 as a tuple of `(N_L,)`
# tensors: the cosine `cos(δ^L/(N_L − i), δ^l)`, the residual deviation `‖δ^l − δ^L‖` and the distribution
# error `‖δ^L/(N_L − i) − δ^l‖`. Compute the cosine yourself (dot product over norms). The checker compares
# with torch's cosine similarity and `bluebook.analysis.theory.residual_deviation`.

# %%
def residual_measures(delta_L, direct):
    """(cosine, deviation, distribution_error), each (N_L,), from delta_L (d,) and direct (N_L, d)."""
    n = direct.shape[0]
    share = torch.stack([delta_L / (n - i) for i in range(n)])
    cosine = (share * direct).sum(1) / (share.norm(dim=1) * direct.norm(dim=1))
    deviation = (direct - delta_L).norm(dim=1)
    distribution_error = (share - direct).norm(dim=1)
    return cosine, deviation, distribution_error


# %%
bluebook.exercises.run(bluebook.exercises.check_residual_measures, residual_measures)
