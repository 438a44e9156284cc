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
# # 01 · The MLP output projection as a key–value memory
#
# **Learning goals**
# - read a *key* `k` (the input of the MLP output projection at the subject's last token) and the
#   *value* `W k` it produces, and check that the value is exactly the MLP's output there;
# - project the value through the final norm and unembedding ("logit lens") to see which tokens it
#   pushes up;
# - remove or swap the values written at the critical layers (forward hooks) and measure how the
#   probability of the fact changes;
# - the least-squares view `W K ≈ M` and the key second moment `C = E[k kᵀ]`: re-derive the normal
#   equations and check them against `torch.linalg.lstsq` and `bluebook.layer_stats`.
#
# **Runtime (CI profile, 2 CPU cores):** about 1 minute (the layer statistics are read from the disk
# cache; a first run computes them in 1–3 minutes).
#
# **Paper section:** §3 "Preliminaries" (FFN as key–value memory,
# `m^l = W_out^l σ(W_in^l γ(h^{l-1} + a^l))`, and the least-squares objective `W K₀ ≈ M₀`).

# %% tags=["parameters"]
model_name = "smollm2-135m"
prompt = "The capital of {} is"
subject = "France"
target = "Paris"
swap_subject = "Germany"
swap_target = "Berlin"
n_wiki_texts = 24
seed = 0
device = "auto"
output_dir = "artifacts/01"

# %%
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

import bluebook
from bluebook import locate, runs
from bluebook.core.keys import read_states
from bluebook.core.stats import collect_second_moments
from bluebook.model import hooks, specs
from bluebook.model.device import resolve_device
from bluebook.plots import show

runs.seed_everything(seed)
dev = resolve_device(device)
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
model, tok = bluebook.load_model(model_name, device=dev, progress=False)
spec = bluebook.spec_for(model)
cfg = bluebook.preset_for(model, "memit")
layers = list(cfg.layers)
l = layers[-1]                        # the last critical layer: where MEMIT measures its residual
text = prompt.format(subject)
s_last = bluebook.model.tokens.subject_last_index(tok, prompt, subject)
target_id = locate.target_token_id(tok, text, target)
swap_id = locate.target_token_id(tok, prompt.format(swap_subject), swap_target)
print(f"critical layers {layers}; studying layer {l}; subject's last token is #{s_last}: "
      f"{tok.convert_ids_to_tokens(tok(text)['input_ids'])[s_last]!r}")

# %% [markdown]
# ## Key and value at the subject's last token
#
# `Trace` records the *input* of the projection (`k ∈ R^m`, the SiLU-gated product of the Llama MLP)
# and the MLP module's *output* (`∈ R^d`). The projection is linear without bias, so the value must
# equal `W k` exactly.

# %%
enc = tok(text, return_tensors="pt").to(dev)
with torch.no_grad(), hooks.Trace(model, [spec.proj_name(l)], inputs=True, outputs=False) as tin, \
        hooks.Trace(model, [spec.mlp_name(l)]) as tout:
    logits = model(**enc).logits
k = tin.inputs[spec.proj_name(l)][0, s_last].float()          # (m,)
W = specs.math_weight(model, l).float()                          # (d, m)
v = W @ k                                                        # (d,)
torch.testing.assert_close(v, tout.outputs[spec.mlp_name(l)][0, s_last].float(), rtol=1e-4, atol=1e-5)
p_clean = float(logits[0, -1].softmax(-1)[target_id])
frac_active = float((k.abs() > 0.05 * k.abs().max()).float().mean())
print(f"‖k‖ = {k.norm():.2f} (m = {k.numel()}), ‖Wk‖ = {v.norm():.2f}; "
      f"{frac_active:.1%} of key entries exceed 5% of the largest; p({target}) = {p_clean:.3f}")

# %% [markdown]
# ### What does the value push toward?
#
# Apply the model's final norm and unembedding to the value alone (a "logit lens" on one MLP
# write). A single layer's value is only one term of the residual stream, so the list is noisy; the
# point is that it is a vector in the same space the unembedding reads.

# %%
norm = specs.get_module(model, spec.ln_f)
head = model.get_output_embeddings()
with torch.no_grad():
    lens = head(norm(v[None, None, :]))[0, 0].float()
top = lens.topk(10).indices.tolist()
print("tokens the value pushes up most:", [tok.decode(i) for i in top])
print(f"rank of {target!r} in the value's logit lens: {int((lens > lens[target_id]).sum())} of {lens.numel()}")

# %% [markdown]
# ## Remove the values, or swap them for another subject's
#
# Forward hooks (`hooks.edit_output`) rewrite the MLP output at the subject's last token only:
#
# * **zero**: the MLP writes nothing there, at one layer or at all critical layers;
# * **swap**: it writes the value it produces for another subject (read from the swap prompt).
#
# Causal tracing (notebook 02) found small per-layer MLP effects on this model, so a single layer
# matters little; the window of critical layers together matters more.

# %%
swap_text = prompt.format(swap_subject)
swap_last = bluebook.model.tokens.subject_last_index(tok, prompt, swap_subject)
with torch.no_grad(), hooks.Trace(model, [spec.mlp_name(j) for j in layers]) as tsw:
    model(**tok(swap_text, return_tensors="pt").to(dev))
swap_vals = {j: tsw.outputs[spec.mlp_name(j)][0, swap_last].clone() for j in layers}

@torch.no_grad()
def probs_with(replace: dict):
    """p(target), p(swap target) when the MLP output at the subject's last token is replaced per layer."""
    import contextlib
    with contextlib.ExitStack() as stack:
        for j, new in replace.items():
            def fn(h, new=new):
                h = h.clone()
                h[:, s_last] = new(h[:, s_last])
                return h
            stack.enter_context(hooks.edit_output(model, spec.mlp_name(j), fn))
        p = model(**enc).logits[0, -1].float().softmax(-1)
    return float(p[target_id]), float(p[swap_id])

zero = lambda h: torch.zeros_like(h)
rows = [("clean", *probs_with({}))]
for j in layers:
    rows.append((f"zero layer {j}", *probs_with({j: zero})))
rows.append((f"zero layers {layers[0]}–{layers[-1]}", *probs_with({j: zero for j in layers})))
rows.append((f"swap layers {layers[0]}–{layers[-1]} with {swap_subject}'s values",
             *probs_with({j: (lambda h, j=j: swap_vals[j].expand_as(h)) for j in layers})))
table = pd.DataFrame(rows, columns=["intervention", f"p({target})", f"p({swap_target})"]).set_index("intervention")
assert hooks.hook_count(model) == 0
table

# %%
p_zero_all = table.iloc[len(layers) + 1, 0]
p_swap_t, p_swap_s = table.iloc[-1]
p_clean_swap = table.iloc[0, 1]
drop_all = p_clean - p_zero_all
drop_single = {j: p_clean - table.iloc[1 + i, 0] for i, j in enumerate(layers)}
fig = Figure(figsize=(7.5, 3.2))
ax = fig.subplots()
table.plot.barh(ax=ax)
ax.set_xlabel("probability of the next token")
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)   # beside the bars, never over one
fig.tight_layout()
show(fig, out, "value_interventions")
print(f"removing the values at all critical layers: p({target}) {p_clean:.3f} -> {p_zero_all:.3f}")
print(f"swapping in {swap_subject}'s values: p({swap_target}) {p_clean_swap:.4f} -> {p_swap_s:.4f}")
assert drop_all > 0, "removing the critical-layer values should lower p(target)"

# %% [markdown]
# ## The least-squares view: `W K ≈ M`
#
# Stack many keys as columns of `K ∈ R^{m×N}` and their values as `M = W K`. Among all matrices,
# `W` is a minimiser of `‖Ŵ K − M‖²`. Setting the gradient `2 (Ŵ K − M) Kᵀ` to zero gives the
# **normal equations** `Ŵ (K Kᵀ) = M Kᵀ`, i.e. `Ŵ = M Kᵀ (K Kᵀ)⁻¹` when `K Kᵀ` is invertible.
# `K Kᵀ / N` is the uncentred second moment `C = E[k kᵀ]` that `bluebook.layer_stats` accumulates
# over Wikipedia text (notebook 03 puts it into the edit's objective).
#
# Below we read the keys of every token of a few Wikipedia summaries, solve the normal equations in
# float64, and compare with `torch.linalg.lstsq` and with the fit itself.

# %%
texts = bluebook.wiki_texts(n=n_wiki_texts, seed=seed + 1)
Ks = []
with torch.no_grad():
    for t in texts:
        e = tok(t, return_tensors="pt", truncation=True, max_length=cfg.stats.max_len).to(dev)
        with hooks.Trace(model, [spec.proj_name(l)], inputs=True, outputs=False,
                         stop_after=spec.proj_name(l)) as tr:
            tr.run(model.base_model, **e)
        Ks.append(tr.inputs[spec.proj_name(l)][0].double())
K0 = torch.cat(Ks).T                                  # (m, N)
M0 = W.double() @ K0                                  # (d, N)
N = K0.shape[1]
A = K0 @ K0.T                                         # m × m
ridge = 1e-8 * A.diagonal().mean()                    # tiny jitter: a few directions are never used
W_ne = torch.linalg.solve(A + ridge * torch.eye(A.shape[0], dtype=A.dtype, device=A.device), K0 @ M0.T).T
W_ls = torch.linalg.lstsq(K0.T, M0.T).solution.T
fit_ne = float((W_ne @ K0 - M0).norm() / M0.norm())
fit_ls = float((W_ls @ K0 - M0).norm() / M0.norm())
print(f"N = {N} tokens; relative fit error: normal equations {fit_ne:.2e}, lstsq {fit_ls:.2e}")
torch.testing.assert_close(W_ne @ K0, W_ls @ K0, rtol=1e-4, atol=1e-6 * float(M0.abs().max()))
assert fit_ne < 1e-4

# %% [markdown]
# `K Kᵀ / N` computed here equals what `bluebook.core.stats.collect_second_moments` accumulates on the same
# texts (it only batches and pads). The cached `layer_stats` (1,000 documents) is the same estimator
# on more text. Its spectrum shows how unevenly keys fill `R^m`: the eigenvalues fall by orders of
# magnitude from the largest to the smallest, so `C` weighs some directions far more than others,
# which is what makes it a useful "what else is stored here" weight. The energy is not concentrated
# in a handful of directions, though: the dashed line marks how many are needed for 90 % of it.

# %%
mine = (A / N).float()
theirs = collect_second_moments(model, tok, [l], texts, cfg.stats, progress=False)[l].moment().float().to(mine.device)
torch.testing.assert_close(mine, theirs, rtol=1e-3, atol=1e-5 * float(mine.abs().max()))
C = bluebook.layer_stats(model, tok, [l], cfg.stats, progress=False)[l].C.double().to(dev)
eig = torch.linalg.eigvalsh(C).flip(0).clamp_min(0).cpu().numpy()
energy = np.cumsum(eig) / eig.sum()
n90 = int(np.searchsorted(energy, 0.9) + 1)
cos = float(torch.nn.functional.cosine_similarity(mine.double().flatten(), C.flatten(), dim=0))
fig = Figure(figsize=(6, 3))
ax = fig.subplots()
ax.semilogy(eig / eig[0])
ax.axvline(n90, color="grey", ls="--", label=f"90% of trace: {n90} directions")
ax.set_xlabel("eigen-direction (sorted)")
ax.set_ylabel("eigenvalue / largest")
ax.set_title(f"spectrum of C = E[k kᵀ] at layer {l}")
ax.legend()
fig.tight_layout()
show(fig, out, "key_spectrum")
print(f"{n90} of {eig.size} directions hold 90% of E[‖k‖²]; eigenvalues span {eig[0] / max(eig[-1], 1e-30):.1e}×; "
      f"cosine(small-sample C, cached C) = {cos:.3f}")
assert n90 < eig.size and cos > 0.8

# %% [markdown]
# How does our key look under `C`? `kᵀ C⁻¹ k` is its squared Mahalanobis length. Averaged over keys
# drawn like the ones `C` was built from it equals `tr(C⁻¹ E[k kᵀ]) = m`; the printout compares the
# subject key with the Wikipedia tokens read above. The same number sets how much of its residual a
# MEMIT update writes into this key (notebook 03: the fraction is `s/(1+s)` with `s = kᵀC⁻¹k / λ`).

# %%
kd = k.double()
maha = float(kd @ torch.linalg.solve(C, kd))
typical = float((K0 * torch.linalg.solve(C, K0)).sum(0).median())
print(f"kᵀC⁻¹k for the subject key = {maha:.0f}; median over the Wikipedia tokens = {typical:.0f} (m = {kd.numel()})")

# %%
metrics = {
    "layer": l,
    "critical_layers": layers,
    "p_target_clean": p_clean,
    "p_target_zero_all": p_zero_all,
    "prob_drop_zero_all": drop_all,
    "prob_drop_zero_single": {str(j): d for j, d in drop_single.items()},
    "p_swap_target_clean": p_clean_swap,
    "p_swap_target_swapped": p_swap_s,
    "p_target_swapped": p_swap_t,
    "key_norm": float(k.norm()),
    "value_norm": float(v.norm()),
    "n_keys_lstsq": N,
    "normal_eq_fit_error": fit_ne,
    "c_directions_90pct": n90,
    "mahalanobis_subject_key": maha,
    "mahalanobis_median_wiki": typical,
}
runs.write_metrics(out, metrics)


# %% [markdown]
# ## Exercises
#
# Each exercise asks for one small function. Fill in its body (replace `raise NotImplementedError`),
# then run the cell below it: it checks your function on random inputs and prints a verdict, or
# "not attempted yet" while the stub is unchanged. Apart from `torch` and `numpy as np`, the
# exercises use nothing from the cells above.
# Solutions: `solutions/01_key_value_memory_solutions.py`.
#
# **Exercise 1.1 — least squares from the normal equations.**
# Stack keys as the columns of `K` (m × N, more keys than dimensions) and the values they should produce as
# the columns of `M` (d × N). Write `least_squares_weights(K, M)` returning the `Ŵ` (d × m) that minimises
# `‖Ŵ K − M‖²`, by solving the normal equations `Ŵ (K Kᵀ) = M Kᵀ` with `torch.linalg.solve` (no explicit
# inverse). The checker compares your `Ŵ` with `torch.linalg.lstsq` on random matrices and checks that the
# normal equations hold.
#
# **Exercise 1.2 — keep the old key–value pairs, insert new ones.**
# The edit's objective before `λC` replaces `K₀K₀ᵀ`: keep what the weight `W` does on the old keys `K₀`
# (m × N₀) and make new keys `K₁` (m × n) produce new values `M₁` (d × n),
# `Ŵ = argmin ‖Ŵ K₀ − W K₀‖² + ‖Ŵ K₁ − M₁‖²`. Setting the gradient to zero gives
# `Ŵ (K₀K₀ᵀ + K₁K₁ᵀ) = W K₀K₀ᵀ + M₁K₁ᵀ`. Write `insert_new_facts(W, K0, K1, M1)` returning `Ŵ` itself
# (not the update `Ŵ − W`). The checker compares it with `torch.linalg.lstsq` on the stacked system
# `Ŵ [K₀, K₁] ≈ [W K₀, M₁]`.

# %%
def least_squares_weights(K, M):
    """Ŵ (d × m) minimising ‖Ŵ K − M‖², for keys K (m × N) and values M (d × N), float64 tensors."""
    raise NotImplementedError

# %%
import bluebook.exercises

bluebook.exercises.run(bluebook.exercises.check_least_squares, least_squares_weights)

# %%
def insert_new_facts(W, K0, K1, M1):
    """Ŵ (d × m) minimising ‖Ŵ K0 − W K0‖² + ‖Ŵ K1 − M1‖²; W (d × m), K0 (m × N0), K1 (m × n), M1 (d × n)."""
    raise NotImplementedError

# %%
import bluebook.exercises

bluebook.exercises.run(bluebook.exercises.check_insert_facts, insert_new_facts)
