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
# # 04 · Why residual distribution fails
#
# **Learning goals.** After this notebook you can
#
# * compute the residual `δ^l` that each critical layer *would need* (a fresh v* optimisation at that
#   layer) and compare it with the share `δ^L/(N_L − i)` that MEMIT's residual distribution gives it;
# * measure the *contribution score* `s = P_θ*(o*|p) − P_θ(o*|p)` of either residual as a hidden-state
#   intervention;
# * run the paper's single-layer editing comparison (distributed vs direct residual).
#
# **Paper section.** §3 "Empirical analysis" of BLUE (contribution, similarity, single-layer editing);
# `docs/algorithms.md` §10.1–10.3.
#
# **Runtime on the CI profile** (SmolLM2-135M, 4 CounterFact requests, 8 v* steps): budgeted at
# about 4 minutes on 2 free CPU cores; the cost is dominated by the 5 v* optimisations of §1. The full profile (`params/full/04_residual_distribution.yaml`: 200 requests,
# the preset's 25 steps) is meant for a GPU or a long CPU run.

# %% tags=["parameters"]
model_name = "smollm2-135m"
n_requests = 4
target_steps = 8
single_layer_batch_size = 1
seed = 0
device = "auto"
output_dir = "artifacts/04"

# %%
import numpy as np
import pandas as pd
import torch

import bluebook
from bluebook import analysis
from bluebook.core.config import with_overrides
from bluebook.core.templates import context_templates
from bluebook.model.device import resolve_device
from bluebook.plots import analysis as aplots
from bluebook.plots import show
from bluebook.runs import seed_everything, write_metrics

seed_everything(seed)
model, tok = bluebook.load_model(model_name, device=resolve_device(device), progress=False)
cfg = bluebook.preset_for(model, "memit")
if target_steps is not None:
    cfg = with_overrides(cfg, target={"steps": int(target_steps)})
layers = list(cfg.layers)
L = layers[-1]
templates = context_templates(model, tok, seed=cfg.template_seed, fixed=cfg.context_templates)
requests = bluebook.load_counterfact(n=n_requests)
print(f"critical layers {layers}, lambda = {cfg.lam}, v* steps = {cfg.target.steps}, {len(requests)} requests")

# %% [markdown]
# ## 1. Residuals at every critical layer
#
# For every request we optimise v* **on the unedited model** at the last critical layer `L` (this is
# `δ^L`, what MEMIT computes) and, separately, at every other critical layer `l` (`δ^l`, what that
# layer would need on its own). MEMIT gives layer `l_i` the share `δ^L/(N_L − i)` instead (on the
# unedited model the first layer's share is exactly this; later layers re-measure what is left).

# %%
res = analysis.residuals_per_layer(model, tok, requests, layers, cfg, templates)
per_request = pd.DataFrame(res.rows())
per_layer = per_request.groupby("layer")[["distance", "cosine", "deviation", "distribution_error",
                                           "norm_direct", "norm_distributed", "steps", "prob_direct"]].mean()
per_layer

# %% [markdown]
# ## 2. Contribution scores
#
# `P(o*|p)` is the mean, over the context-prefixed rewriting prompts, of `exp(mean token log-prob of
# the new target)` — the quantity the v* optimisation logs. θ* adds a vector to block `l`'s output at
# the subject's last token of every prompt: either the distributed `δ^L/(N_L − i)` or the direct `δ^l`.
# At `l = L` both are the same vector, so both scores coincide there.

# %%
scores = analysis.contribution_scores(model, tok, requests, res, templates)
s_dist, s_direct = scores.mean("distributed"), scores.mean("direct")
assert np.array_equal(scores.s_distributed[L], scores.s_direct[L])
pd.DataFrame({"s_distributed": s_dist, "s_direct": s_direct, "P0": float(scores.p0.mean())})

# %%
fig = aplots.contribution_curves(scores)
show(fig, output_dir, "contribution_scores")

# %% [markdown]
# ## 3. Similarity and distance of the two residuals
#
# The cosine is scale-free, so it isolates the *direction*: does the share of `δ^L` even point where
# layer `l` needs to go? `‖δ^l − δ^L‖` is the residual deviation `‖R^{l*} − R^L‖` of Theorem 4.1
# (notebook 05).

# %%
cos_mean = res.mean("cosine")
assert all(-1 - 1e-6 <= c <= 1 + 1e-6 for v in res.cosine.values() for c in v)
assert abs(cos_mean[L] - 1) < 1e-5            # at L the share is δ^L itself
fig = aplots.cosine_curve(res)
show(fig, output_dir, "cosine")

# %%
fig = aplots.residual_deviation_curve(res)
show(fig, output_dir, "residual_deviation")

# %% [markdown]
# ## 4. Single-layer editing
#
# Edit **one** critical layer only (MEMIT's closed form, λ·C regularisation), once with the
# distributed residual `δ^L/(N_L − i)` and once with the direct residual `δ^l`, then score CounterFact
# efficacy (rewrite prompt) and generalization (paraphrases). Each request is edited on its own
# (`single_layer_batch_size`), the edit is undone after scoring. The v* targets from §1 are reused.

# %%
single = {l: analysis.single_layer_editing(model, tok, requests, layers, cfg, l, residuals=res,
                                           templates=templates, batch_size=single_layer_batch_size)
          for l in layers}
single_table = pd.DataFrame({l: {"efficacy_distributed": r["distributed"]["efficacy"],
                                 "efficacy_direct": r["direct"]["efficacy"],
                                 "generalization_distributed": r["distributed"]["generalization"],
                                 "generalization_direct": r["direct"]["generalization"],
                                 "efficacy_unedited": r["unedited"]["efficacy"]} for l, r in single.items()}).T
single_table

# %%
fig = aplots.single_layer_bars(single)
show(fig, output_dir, "single_layer")

# %% [markdown]
# ## 5. Compared with the paper
#
# The paper reports (GPT2-XL, GPT-J, Llama3-8B, 200 requests): `s_dist ≈ 1` only at `L`, below 0.7 at
# every other critical layer and below 0.1 at the first; `s_comp ≈ 1` at every layer; the cosine
# between distributed and direct residuals decreasing with the distance to `L`; and direct residuals
# giving about 3× the single-layer efficacy of distributed ones. The next cell evaluates each of these
# statements on *this* run and prints whether it holds; nothing is asserted beyond the identities
# above, because on a 135M-parameter model with a CI-sized sample some of them need not hold.

# %%
first = layers[0]
inner = [l for l in layers if l != L]
eff_dist = float(np.mean([single[l]["distributed"]["efficacy"] for l in inner]))
eff_direct = float(np.mean([single[l]["direct"]["efficacy"] for l in inner]))
ratio = eff_direct / eff_dist if eff_dist > 0 else float("inf")
cos_inner = [cos_mean[l] for l in layers]
claims = {
    "s_dist at L >= 0.9": s_dist[L] >= 0.9,
    "s_dist < 0.7 at every l < L": all(s_dist[l] < 0.7 for l in inner),
    "s_dist < 0.1 at the first layer": s_dist[first] < 0.1,
    "s_direct >= 0.9 at every layer": all(v >= 0.9 for v in s_direct.values()),
    "s_direct > s_dist at every l < L": all(s_direct[l] > s_dist[l] for l in inner),
    "cosine non-decreasing towards L": all(a <= b + 1e-9 for a, b in zip(cos_inner, cos_inner[1:])),
    "direct/distributed single-layer efficacy >= 3 (l < L)": ratio >= 3,
    "direct > distributed single-layer efficacy (l < L)": eff_direct > eff_dist,
}
for k, v in claims.items():
    print(f"{'agrees   ' if v else 'DISAGREES'}  {k}")
print(f"mean single-layer efficacy over l < L: distributed {eff_dist:.1f}, direct {eff_direct:.1f}, ratio {ratio:.2f}")
print(f"mean v* probability reached by the direct optimisation per layer: {res.mean('prob')}")

# %% [markdown]
# **Reading the result.** The contribution of the direct residual is bounded by how far the v*
# optimisation got: with few steps (the CI profile uses 8) or strong weight decay/clamping the target
# probability stays below 1 at every layer, so `s_direct` sits below the paper's ≈1 even where it
# clearly beats `s_dist`. The printed lines above say, for this run, which of the paper's statements
# are reproduced; the full profile (200 requests, 25 steps) is the one to compare with the paper.

# %%
metrics = {
    "model": model_name, "n_requests": len(requests), "layers": layers, "target_steps": cfg.target.steps,
    "p0_mean": float(scores.p0.mean()),
    "contribution_distributed": {str(l): v for l, v in s_dist.items()},
    "contribution_direct": {str(l): v for l, v in s_direct.items()},
    "cosine": {str(l): v for l, v in cos_mean.items()},
    "residual_deviation": {str(l): v for l, v in res.mean("deviation").items()},
    "distribution_error": {str(l): v for l, v in res.mean("distribution_error").items()},
    "steps": {str(l): v for l, v in res.mean("steps").items()},
    "single_layer_efficacy_distributed": {str(l): single[l]["distributed"]["efficacy"] for l in layers},
    "single_layer_efficacy_direct": {str(l): single[l]["direct"]["efficacy"] for l in layers},
    "single_layer_generalization_distributed": {str(l): single[l]["distributed"]["generalization"] for l in layers},
    "single_layer_generalization_direct": {str(l): single[l]["direct"]["generalization"] for l in layers},
    "single_layer_efficacy_unedited": float(np.mean([single[l]["unedited"]["efficacy"] for l in layers])),
    "single_layer_efficacy_distributed_mean": eff_dist,
    "single_layer_efficacy_direct_mean": eff_direct,
    "single_layer_efficacy_ratio": ratio if np.isfinite(ratio) else None,
    "paper_claims": {k: bool(v) for k, v in claims.items()},
}
write_metrics(output_dir, metrics)
bluebook.runs.jsonable(metrics)  # what metrics.json holds
