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
# # 03 · Closed-form edits: a rank-one edit at one layer, and MEMIT over the critical layers
#
# **Learning goals**
# - compute the target hidden state `v* = h + δ` at a layer (`optimize_targets`) and the residual
#   `r = v* − h` it asks that layer to add;
# - write a ROME-style rank-one update `Δ = r uᵀ / (uᵀ k)` with `u = C⁻¹ k / ‖C⁻¹ k‖`, apply it and
#   see the fact change;
# - re-derive MEMIT's closed form `Δ = R Kᵀ (λC + K Kᵀ)⁻¹` (the paper's `R K₁ᵀ (K₀K₀ᵀ + K₁K₁ᵀ)⁻¹`)
#   from the normal equations and check it against `bluebook.core.solvers.memit_delta`, with the one-key
#   case reducing to the rank-one update (Sherman–Morrison);
# - run MEMIT over the critical layers with `bluebook.edit(..., "memit")` and compare the edited
#   prompt, paraphrases and neighbours before and after.
#
# **Runtime (CI profile, 2 CPU cores):** about 3 minutes (one target optimisation, shared by the
# rank-one edit and MEMIT; layer statistics from the disk cache).
#
# **Paper section:** §3 (locate-then-edit: the least-squares objective, its closed form and the
# residual distribution `R^l = R^L / (L − l + 1)`), which BLUE revisits in §4.

# %% tags=["parameters"]
model_name = "smollm2-135m"
prompt = "The capital of {} is"
subject = "France"
target_new = "Rome"
target_true = "Paris"
paraphrases = ["The capital city of France is", "France, whose capital is", "Q: What is the capital of France? A:"]
neighbours = [["The capital of Germany is", "Berlin"], ["The capital of Spain is", "Madrid"], ["The capital of Japan is", "Tokyo"]]
seed = 0
device = "auto"
output_dir = "artifacts/03"

# %%
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import bluebook
from bluebook import locate, runs
from bluebook import metrics as bm
from bluebook.core import solvers
from bluebook.core.keys import read_states
from bluebook.metrics.claims import all_hold_claim, claims_frame, paired_claim, threshold_claim
from bluebook.model import weights
from bluebook.model.device import resolve_device
from bluebook.plots import edits as edit_plots
from bluebook.plots import show

runs.seed_everything(seed)
dev = resolve_device(device)
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
model, tok = bluebook.load_model(model_name, device=dev, progress=False)
cfg = bluebook.preset_for(model, "memit")           # the model's preset (hparams=None below uses the same)
layers = list(cfg.layers)
L = layers[-1]
templates = bluebook.core.templates.context_templates(model, tok, fixed=cfg.context_templates)
req = bluebook.EditRequest(prompt, subject, target_new, target_true)
stats = bluebook.layer_stats(model, tok, layers, cfg.stats, progress=False)
new_id = locate.target_token_id(tok, req.text, target_new)
print(f"critical layers {layers}, λ = {cfg.lam:g}; rank-one layer L = {L}; edit: {req.text!r} -> {target_new!r}")

# %% [markdown]
# ## Measuring: probabilities on the edited prompt, paraphrases and neighbours
#
# `bluebook.metrics.continuation_nll` scores a continuation after a prompt; for one-token targets
# `exp(−NLL)` is its probability. On paraphrases we want the *new* object to win; on neighbours
# (other subjects) the *true* object should stay.

# %%
rows_spec = ([("edited", req.text, target_new, target_true)]
             + [("paraphrase", p, target_new, target_true) for p in paraphrases]
             + [("neighbour", p, target_new, t) for p, t in neighbours])

def measure():
    prefixes = [r[1] for r in rows_spec for _ in (0, 1)]
    conts = [c for r in rows_spec for c in (r[2], r[3])]
    nll, _ = bm.continuation_nll(model, tok, prefixes, conts)
    p = torch.exp(-nll).view(-1, 2).tolist()
    return {"p_new": [a for a, _ in p], "p_true": [b for _, b in p]}

def is_top1():
    return locate.known_rank(model, tok, prompt, subject, target_new) == 0

before = measure()
top1_before = is_top1()
print(f"before: p({target_new}) = {before['p_new'][0]:.4f}, p({target_true}) = {before['p_true'][0]:.3f}, "
      f"{target_new} top-1: {top1_before}")

# %% [markdown]
# ## Step 1 — the target `v*` at layer L and the residual `r`
#
# `optimize_targets` adds a free vector `δ` to block L's output at the subject's last token and
# optimises it (Adam) so the model predicts the new object after every context template, with a KL
# term keeping "{subject} is a" unchanged and a norm penalty (algorithms.md §1). `z = h + δ` is the
# hidden state layer L *should* produce; the residual `r = z − h` is what the edited weights must add.

# %%
tr = bluebook.optimize_targets(model, tok, [req], L, cfg.target, templates, progress=False)
st = read_states(model, tok, [req], key_layers=[L], hidden_layers=[L], templates=templates)
k = st.keys[L][:, 0].double()                      # template-averaged key at layer L  (m,)
h = st.hidden[L][:, 0].double()                    # current block-L output, bare prompt  (d,)
r = tr.z[0].double().to(h.device) - h              # residual  (d,)
torch.testing.assert_close(r, tr.delta[0].double().to(h.device), rtol=1e-4, atol=1e-4)
print(f"{tr.steps[0]} steps; p({target_new}) with δ added: {tr.final_prob[0]:.3f}; "
      f"‖δ‖ = {r.norm():.2f}, ‖h‖ = {h.norm():.2f}")

# %%
from matplotlib.figure import Figure

fig = Figure(figsize=(6.5, 3.2))
ax = fig.subplots()
ax.plot(tr.loss[0], color="C0", lw=2.5, label="total loss (NLL + KL + weight decay)")
ax.plot(tr.nll[0], color="C1", ls="--", label="target NLL")
ax.set_xlabel("step")
ax.set_ylabel("loss (nats)")
ax2 = ax.twinx()                                   # a probability is not a loss: its own axis
ax2.plot(tr.prob[0], color="C2", marker="o", ms=3, label=f"p({target_new})")
ax2.set_ylim(0, 1)
ax2.set_ylabel("probability")
lines = ax.get_lines() + ax2.get_lines()
ax.legend(lines, [x.get_label() for x in lines], loc="center right", fontsize=8)
ax.set_title(f"optimising v* at layer {L}")
fig.tight_layout()
show(fig, out, "target_optimisation")

# %% [markdown]
# ## Step 2 — a rank-one edit at layer L (ROME-style)
#
# We want `Ŵ = W + Δ` with `Δ k = r` (the key now produces value `W k + r`) while disturbing other
# keys as little as possible *as measured by* `C`. Minimising `tr(Δ C Δᵀ)` subject to `Δ k = r`
# (Lagrange multipliers) gives a rank-one update along `C⁻¹k`:
#
#     u = C⁻¹k / ‖C⁻¹k‖,        Δ = r uᵀ / (uᵀ k)          (so Δ k = r exactly)
#
# ROME puts this on the MLP output; adding `r` to the MLP output at the subject's last token is the
# same as adding it to block L's output there, which is what `v*` was optimised for.

# %%
C_L = stats[L].C.double().to(k.device)
Cik = torch.linalg.solve(C_L, k)
u = Cik / Cik.norm()
Delta_rank1 = torch.outer(r, u) / (u @ k)                       # (d, m)
torch.testing.assert_close(Delta_rank1 @ k, r)
assert torch.linalg.matrix_rank(Delta_rank1.float()) == 1
with weights.patched_weights(model, {L: Delta_rank1.float()}):
    after_rank1 = measure()
    top1_rank1 = is_top1()
print(f"rank-one edit at layer {L}: p({target_new}) {before['p_new'][0]:.4f} -> {after_rank1['p_new'][0]:.3f}, "
      f"top-1: {top1_rank1}")
assert after_rank1["p_new"][0] > before["p_new"][0]


# %% [markdown]
# ## Step 3 — the least-squares objective and its closed form
#
# MEMIT keeps the old key–value pairs `(K₀, M₀ = W K₀)` and adds new ones `(K₁, M₁)`:
#
#     Ŵ = argmin ‖Ŵ K₀ − M₀‖² + ‖Ŵ K₁ − M₁‖²
#
# Gradient = 0 gives the normal equations `Ŵ (K₀K₀ᵀ + K₁K₁ᵀ) = M₀K₀ᵀ + M₁K₁ᵀ`. Write `Ŵ = W + Δ`,
# use `W K₀K₀ᵀ = M₀K₀ᵀ` and `R = M₁ − W K₁` (the residuals):
#
#     Δ (K₀K₀ᵀ + K₁K₁ᵀ) = R K₁ᵀ    ⇒    Δ = R K₁ᵀ (K₀K₀ᵀ + K₁K₁ᵀ)⁻¹
#
# In practice `K₀K₀ᵀ` is replaced by `λ C` (Wikipedia keys, weighted by λ). Below: these few lines
# against `solvers.memit_delta`, and against `torch.linalg.lstsq` on the stacked system
# `Δ [√λ Lc, K₁] ≈ [0, R]` with `C = Lc Lcᵀ` (the same objective written as one least-squares problem).

# %%
def memit_closed_form(K, R, C, lam):
    A = lam * C + K @ K.T                                      # K₀K₀ᵀ + K₁K₁ᵀ with K₀K₀ᵀ = λC
    return torch.linalg.solve(A, K @ R.T).T                    # A symmetric: (A⁻¹ K Rᵀ)ᵀ = R Kᵀ A⁻¹

K1, R1 = k[:, None], r[:, None]
mine = memit_closed_form(K1, R1, C_L, cfg.lam)
torch.testing.assert_close(mine, solvers.memit_delta(K1, R1, C_L, cfg.lam), rtol=1e-6, atol=1e-9)

Lc = torch.linalg.cholesky(C_L)
X = torch.cat([np.sqrt(cfg.lam) * Lc, K1], 1)                  # m × (m + 1)
Y = torch.cat([torch.zeros(r.numel(), Lc.shape[1], dtype=r.dtype, device=r.device), R1], 1)
lstsq = torch.linalg.lstsq(X.T, Y.T).solution.T
torch.testing.assert_close(mine, lstsq, rtol=1e-5, atol=1e-7)
print("closed form == solvers.memit_delta == lstsq of the stacked objective")

# %% [markdown]
# **One key: MEMIT's update is the rank-one update, shrunk.** By Sherman–Morrison,
# `kᵀ(λC + kkᵀ)⁻¹ = kᵀC⁻¹ / (λ + kᵀC⁻¹k)`, so
#
#     Δ_MEMIT = r (C⁻¹k)ᵀ / (λ + kᵀC⁻¹k) = s/(1+s) · Δ_rank-one,    s = kᵀC⁻¹k / λ
#
# λ trades "write the new value" against "leave everything else alone": with `s ≫ 1` the key gets its
# full residual, with `s ≪ 1` only a fraction. The table shows the factor for several λ.

# %%
kCk = float(k @ Cik)
sm = torch.outer(r, Cik) / (cfg.lam + kCk)
torch.testing.assert_close(solvers.memit_delta(K1, R1, C_L, cfg.lam), sm, rtol=1e-6, atol=1e-9)
torch.testing.assert_close(sm, kCk / (cfg.lam + kCk) * Delta_rank1, rtol=1e-6, atol=1e-9)
shrink = pd.DataFrame({"λ": [1.0, 10.0, 100.0, 1000.0, cfg.lam],
                       "fraction of r written, s/(1+s)": [kCk / (x + kCk) for x in [1.0, 10.0, 100.0, 1000.0, cfg.lam]]})
print(f"kᵀC⁻¹k = {kCk:.0f}; preset λ = {cfg.lam:g}")
shrink

# %% [markdown]
# ## Step 4 — MEMIT over the critical layers
#
# `bluebook.edit(model, tok, [req], "memit")` runs the MEMIT loop (algorithms.md §4) with the model's
# preset (`hparams=None`): the target is optimised at the last critical layer L (we pass the one
# computed above, the same computation), then for each layer `l` in ascending order it reads the keys
# on the partially edited model, re-measures the residual at L, gives layer `l` the share
# `R / (N_L − i)` (the **residual distribution** that BLUE questions), solves the closed form and
# applies it before moving on. The weights are unchanged on return; `with result:` applies the edit
# inside the block.

# %%
res = bluebook.edit(model, tok, [req], "memit", hparams=None, precomputed_targets={L: tr}, progress=False)
diag = pd.DataFrame(res.diagnostics["layers"]).T[["z_error", "residual_norm", "update_norm", "weight_norm"]]
assert res.diagnostics["config"].lam == cfg.lam, "the preset changed on disk during the run; restart the kernel"
for l in res.layers:                                           # every layer's update is the closed form
    Cl = stats[l].C.double().to(res.keys[l].device)
    torch.testing.assert_close(res.deltas[l].double(),
                               memit_closed_form(res.keys[l].double(), res.residuals[l].double(), Cl, cfg.lam),
                               rtol=1e-4, atol=1e-7)
with res:
    after = measure()
    top1_after = is_top1()
print(f"MEMIT: p({target_new}) {before['p_new'][0]:.4f} -> {after['p_new'][0]:.3f}, top-1: {top1_after}")
diag

# %% [markdown]
# The `z_error` column is the residual still left at layer L when layer `l` is solved: the first
# layer gets only `1/N_L` of a large residual; later layers get shares of what is left. BLUE
# (notebook 04 onwards) instead computes the residual *directly* at the first and last critical layers.
#
# Without the configuration, the sequential state, the other solvers and the checks, that loop is
# the function below, kept in the package as `bluebook.core.plain.memit_edit` and tested equal to
# `bluebook.edit(..., "memit")` (`tests/reference/test_plain.py`): one target `Z` at `L`, then for
# each layer its keys `K`, the state `h` at `L` on the partly edited model, its share `R` of `Z − h`,
# the closed form and the update. Notebook 06 sets BLUE beside it.

# %%
import inspect

from bluebook.core.plain import memit_edit

print(inspect.getsource(memit_edit))

# %%
table = pd.DataFrame({
    "group": [g for g, *_ in rows_spec],
    "prompt": [p for _, p, *_ in rows_spec],
    "scored": [f"{n} / {t}" for *_, n, t in rows_spec],
    "p_new before": before["p_new"], "p_new rank-one": after_rank1["p_new"], "p_new MEMIT": after["p_new"],
    "p_true before": before["p_true"], "p_true rank-one": after_rank1["p_true"], "p_true MEMIT": after["p_true"],
})
bars = pd.DataFrame({
    "group": table["group"], "prompt": table["prompt"],
    "before": [n if g != "neighbour" else t for g, n, t in zip(table["group"], before["p_new"], before["p_true"])],
    "rank-one (layer L)": [n if g != "neighbour" else t for g, n, t in zip(table["group"], after_rank1["p_new"], after_rank1["p_true"])],
    "MEMIT": [n if g != "neighbour" else t for g, n, t in zip(table["group"], after["p_new"], after["p_true"])],
})
fig = edit_plots.before_after_bars(bars, columns=["before", "rank-one (layer L)", "MEMIT"],
                                   title=f"p({target_new}) on edited/paraphrase prompts; p(true) on neighbours")
show(fig, out, "before_after")
show(edit_plots.probability_table(table.round(4)), out, "probability_table")
table.round(4)

# %%
assert after["p_new"][0] > before["p_new"][0], "MEMIT should raise p(target_new) on the edited prompt"
assert top1_after, f"{target_new!r} should be the top-1 next token after the MEMIT edit"
n_para = len(paraphrases)
para_before = float(np.mean(before["p_new"][1:1 + n_para]))
para_after = float(np.mean(after["p_new"][1:1 + n_para]))
neigh_before = float(np.mean(before["p_true"][1 + n_para:]))
neigh_after = float(np.mean(after["p_true"][1 + n_para:]))
layer_err = [float((res.deltas[l].double() - memit_closed_form(res.keys[l].double(), res.residuals[l].double(),
                                                               stats[l].C.double().to(res.keys[l].device),
                                                               cfg.lam)).norm() / res.deltas[l].double().norm())
             for l in res.layers]
lstsq_err = float((mine - lstsq).norm() / mine.norm())
note = "one edited fact: the paraphrases and neighbours are a few prompts of it, not a sample of facts"
claims = {
    "closed_form_is_least_squares": all_hold_claim(
        "MEMIT's update is the least-squares solution of its objective (the stacked lstsq and every layer's "
        "update in bluebook.edit agree with the closed form to 1e-4)", [e < 1e-4 for e in layer_err + [lstsq_err]],
        note=f"relative differences: lstsq {lstsq_err:.1e}, per layer max {max(layer_err):.1e}"),
    "edit_generalizes_to_paraphrases": paired_claim(
        f"the edit raises p({target_new}) on paraphrases of the edited prompt",
        after["p_new"][1:1 + n_para], before["p_new"][1:1 + n_para], note=note),
    "edit_keeps_neighbours": threshold_claim(
        "the edit leaves other subjects' true objects alone (|Δp(true)| < 0.05 on neighbour prompts)",
        [abs(a - b) for a, b in zip(after["p_true"][1 + n_para:], before["p_true"][1 + n_para:])], 0.05,
        direction=-1, note=note),
}
claims_frame(claims)[["ours", "low", "high", "n", "verdict", "note"]]

# %%
metrics = {
    "critical_layers": layers, "lam": cfg.lam, "rank_one_layer": L,
    "p_new_before": before["p_new"][0], "p_new_after": after["p_new"][0],
    "p_true_before": before["p_true"][0], "p_true_after": after["p_true"][0],
    "target_top1_before": bool(top1_before), "target_top1_after": bool(top1_after),
    "p_new_after_rank_one": after_rank1["p_new"][0], "target_top1_after_rank_one": bool(top1_rank1),
    "paraphrase_p_new_before": para_before, "paraphrase_p_new_after": para_after,
    "neighbour_p_true_before": neigh_before, "neighbour_p_true_after": neigh_after,
    "target_steps": tr.steps[0], "target_prob": tr.final_prob[0],
    "kCk": kCk, "memit_single_key_fraction": kCk / (cfg.lam + kCk),
    "update_norms": {str(l): float(res.deltas[l].norm()) for l in res.layers},
    "claims": claims,
}
runs.write_metrics(out, metrics)


# %% [markdown]
# ## Exercises
#
# Each exercise asks for one small function. Fill in its body (replace `raise NotImplementedError`),
# then run the cell below it: it checks your function on random inputs and prints a verdict, or
# "not attempted yet" while the stub is unchanged. Apart from `torch` and `numpy as np`, the
# exercises use nothing from the cells above.
# Solutions: `solutions/03_closed_form_edits_solutions.py`.
#
# **Exercise 3.1 — MEMIT's closed-form update.**
# Without looking at the notebook's `memit_closed_form`, write `memit_update(K, R, C, lam)` returning
# `Δ = R Kᵀ (λC + K Kᵀ)⁻¹` (d × m) for keys `K` (m × n), residuals `R` (d × n), key second moment `C`
# (m × m) and weight `λ`. Use `torch.linalg.solve` (the matrix `λC + K Kᵀ` is symmetric). The checker
# compares your `Δ` with the stacked least-squares problem `Δ [√λ L_C, K] ≈ [0, R]` (`C = L_C L_Cᵀ`) and
# with `bluebook.core.solvers.memit_delta`, and checks that with a tiny λ the update maps the keys to the
# residuals, `Δ K ≈ R`.
#
# **Exercise 3.2 — the rank-one (ROME-style) update.**
# Write `rank_one_update(k, r, C)` for one key `k` (m,), residual `r` (d,) and `C` (m × m), returning
# `Δ = r uᵀ / (uᵀ k)` with `u = C⁻¹k / ‖C⁻¹k‖` (d × m). The checker tests `Δ k = r`, that `Δ` has rank one,
# and that among all updates with `Δ k = r` yours has the least `tr(Δ C Δᵀ)`: it compares with MEMIT's
# one-key update rescaled by `(λ + kᵀC⁻¹k) / kᵀC⁻¹k` (Sherman–Morrison). (Using `u = k/‖k‖` passes the first
# two tests and fails the third.)

# %%
def memit_update(K, R, C, lam):
    """MEMIT's Δ = R Kᵀ (λC + K Kᵀ)⁻¹ (d × m); K (m × n), R (d × n), C (m × m), float64 tensors."""
    raise NotImplementedError

# %%
import bluebook.exercises

bluebook.exercises.run(bluebook.exercises.check_memit_update, memit_update)

# %%
def rank_one_update(k, r, C):
    """Δ = r uᵀ / (uᵀ k) with u = C⁻¹k / ‖C⁻¹k‖ (d × m); k (m,), r (d,), C (m × m), float64 tensors."""
    raise NotImplementedError

# %%
import bluebook.exercises

bluebook.exercises.run(bluebook.exercises.check_rank_one_update, rank_one_update)
