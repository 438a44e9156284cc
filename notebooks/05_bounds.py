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
# # 05 · The weight-deviation bound (Theorem 4.1, Lemma 4.3)
#
# **Learning goals.** After this notebook you can
#
# * state Theorem 4.1 in the paper's notation and derive it in three lines;
# * evaluate the actual weight deviation `‖Δ^{l*} − Δ^l‖₂` and its bound on real keys, statistics and
#   residuals of SmolLM2, for every (request, critical layer) pair;
# * see how deviation and bound change with the distribution distance `L − l`, the batch size and the
#   number of earlier batches in sequential editing, and what Lemma 4.3 does and does not guarantee.
#
# **Paper section.** §4 "Theoretical analysis" of BLUE (Theorem 4.1, Lemma 4.3); `docs/algorithms.md`
# §10.5; the pure math is in `bluebook.analysis.theory`.
#
# **Runtime on the CI profile** (SmolLM2-135M, 4 requests, 8 v* steps, batch sizes 1/2/4, up to 8
# earlier batches in `C_p`, up to 2 applied): 3.1 minutes on 2 idle CPU cores in a fresh-clone
# `make run` (2026-12-02), dominated by the v* optimisations (the layer statistics `C` come from the
# disk cache, which `python -m bluebook prepare` fills).

# %% tags=["parameters"]
model_name = "smollm2-135m"
n_requests = 4
target_steps = 8
batch_sizes = [1, 2, 4]
seq_lengths = [0, 1, 2, 4, 8]
seq_batch_size = 4
applied_seq_lengths = [0, 1, 2]   # earlier batches really applied (MEMIT-seq) before measuring; [] skips it
seed = 0
recorded_notebooks = "../results/notebooks"   # committed full-profile runs: the recorded tier
device = "auto"
output_dir = "artifacts/05"

# %%
import numpy as np
import pandas as pd
import torch

import bluebook
from bluebook import analysis
from bluebook.core.config import with_overrides
from bluebook.core.templates import context_templates
from bluebook.experiments import verdicts
from bluebook.experiments.notebooks import recorded_claims
from bluebook.metrics.claims import all_hold_claim, claims_frame, correlation_claim
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
# ## 1. The statement
#
# Every MEMIT-style update is `Δ^l = R^l Q` with `Q = K₁ᵀ(K₀K₀ᵀ + K₁K₁ᵀ)⁻¹`, where `K₀K₀ᵀ ≡ λC`
# (sequential editing adds `K_pK_pᵀ` inside the inverse). Let `R^{l*}` be the residual computed directly
# at layer `l`, `R^L` the one computed at the last critical layer, and `R^l = R^L/(L − l + 1)` the
# distributed one. **Theorem 4.1** (wording and constant taken from a *secondary* summary of the paper;
# the paper's exact constant is not verified here):
#
# $$\|\Delta^{l*} - \Delta^l\|_2 \;\le\; \big(\|R^{l*} - R^L\|_2 + (L-l)\,\|R^L\|_2\big)\,\|Q\|_2 .$$
#
# *Derivation.* With `D = L − l`, add and subtract `R^L`:
# `R^{l*} − R^L/(D+1) = (R^{l*} − R^L) + R^L·D/(D+1)`. The triangle inequality gives
# `‖R^{l*} − R^L/(D+1)‖ ≤ ‖R^{l*} − R^L‖ + D/(D+1)·‖R^L‖`, and submultiplicativity
# `‖(R^{l*} − R^l)Q‖₂ ≤ ‖R^{l*} − R^l‖₂‖Q‖₂` finishes it. Stopping before `D/(D+1) ≤ D` gives the
# *tight* bound (`bluebook.analysis.theory.theorem41_tight_bound`); the stated one replaces `D/(D+1)` by `D`.
# Because it is a chain of inequalities it must hold for **every** pair — the notebook asserts that.

# %% [markdown]
# ## 2. Deviation vs bound for every (request, layer) pair
#
# Real ingredients: `K` = keys at layer `l` (context-template averages), `C` = the layer statistics,
# `Q = Kᵀ(λC + KKᵀ)⁻¹` for one request (`n = 1`), `R^{l*}` = the direct `δ^l`, `R^L` = `δ^L`, all on the
# unedited model. (The distance is the index distance `N_L − 1 − i`, equal to `L − l` for the
# preset's consecutive layers.)

# %%
n_res = max(n_requests, max(batch_sizes), seq_batch_size)
req_res = bluebook.load_counterfact(n=n_res)
res = analysis.residuals_per_layer(model, tok, req_res, layers, cfg, templates)
C = {l: s.C for l, s in bluebook.layer_stats(model, tok, layers, cfg.stats, progress=False).items()}
pairs = analysis.bound_checks(model, tok, req_res, layers, cfg, residuals=res, templates=templates, C=C)
pair_df = pd.DataFrame(pairs.rows)
bound_holds_fraction = pairs.holds_fraction
assert bound_holds_fraction == 1.0, pair_df[~pair_df["holds"]]
pair_df.groupby("distance")[["deviation", "tight_bound", "bound", "residual_deviation", "q_norm", "tightness"]].mean()

# %%
fig = aplots.deviation_vs_bound(pairs)
show(fig, output_dir, "deviation_vs_bound")

# %% [markdown]
# ## 3. Growth with distance, batch size and sequence length
#
# * **Distance** `L − l`: the pairs above.
# * **Batch size**: the same residuals solved together in disjoint batches of `b` requests
#   (`Q` is then `b × m`).
# * **Sequence length**: the first `seq_batch_size` requests form the current batch; `t` earlier
#   batches of *other* CounterFact requests are folded into `C_p = Σ K_pK_pᵀ` (MEMIT-seq / Lemma 4.3).
#   Stated approximation: the earlier keys are read on the unedited model (the reference reads them
#   after each applied batch) and the current residuals do not change with `t`, so only `C_p` varies.

# %%
by_batch = analysis.batch_size_sweep(model, tok, req_res, batch_sizes, layers, cfg, residuals=res,
                                     templates=templates, C=C)
cur = req_res[:seq_batch_size]
earlier = bluebook.load_counterfact(n=max(seq_lengths) * seq_batch_size, offset=n_res) if max(seq_lengths) else []
sub = res.select(range(seq_batch_size))
by_seq = analysis.sequential_sweep(model, tok, cur, earlier, seq_lengths, layers, cfg, residuals=sub,
                                   templates=templates, C=C, earlier_batch_size=seq_batch_size)
assert by_batch.holds_fraction == 1.0 and by_seq.holds_fraction == 1.0
pd.DataFrame(by_batch.rows).query("distance > 0").groupby("batch_size")[["deviation", "bound", "q_norm"]].mean()

# %%
pd.DataFrame(by_seq.rows).query("distance > 0").groupby("seq_length")[
    ["deviation", "bound", "q_norm", "lemma43_q_norm_without_cp", "lemma43_cp_norm", "lemma43_key_gain"]].mean()

# %%
fig = aplots.deviation_growth(pairs, by_batch, by_seq)
show(fig, output_dir, "deviation_growth")


# %%
def rho(table, x, only_moving=True):
    rows = [r for r in table.rows if not only_moving or r["distance"] > 0]
    return analysis.spearman([r[x] for r in rows], [r["deviation"] for r in rows])

spearman_distance = analysis.spearman(pair_df["distance"], pair_df["deviation"])
spearman_batch = rho(by_batch, "batch_size")
spearman_seq = rho(by_seq, "seq_length")
spearman_bound_distance = analysis.spearman(pair_df["distance"], pair_df["bound"])
print(f"Spearman(deviation, L-l)            = {spearman_distance:+.3f}  (bound: {spearman_bound_distance:+.3f})")
print(f"Spearman(deviation, batch size)     = {spearman_batch:+.3f}  (l < L)")
print(f"Spearman(deviation, earlier batches) = {spearman_seq:+.3f}  (l < L)")

# %% [markdown]
# ## 4. Lemma 4.3, honestly
#
# The summary of the paper says that in sequential editing the bound grows with `‖K_pK_pᵀ‖₂`. What
# the algebra supports (see `bluebook.analysis.theory` and `docs/notation.md`): `C_p` sits *inside* the inverse
# of `Q`, so it acts as extra regularisation. The key gain `G = Kᵀ(λC + C_p + KKᵀ)⁻¹K` can only fall
# when `C_p` is added, and the universal envelope `‖Q‖₂ ≤ 1/(2√λ_min(λC + C_p))` can only fall too.
# `‖Q‖₂` itself is not monotone: it can rise while the earlier keys cover only part of the key space
# (`t·n` below the key dimension `m`) and falls once they span it. What grows with the sequence for
# sure is `‖C_p‖₂`, and — when batches are applied permanently — the *accumulated* deviation in the
# weight. The table above shows which regime this run is in (`m = 1536` on SmolLM2, so the CI sweep
# with `t·n ≤ 32` is far from spanning the key space); the checks below are computed, not assumed.

# %%
seq_df = pd.DataFrame(by_seq.rows)
g = seq_df.groupby("seq_length").mean(numeric_only=True)
gain_never_up = bool((seq_df["lemma43_key_gain"] <= seq_df["lemma43_key_gain_without_cp"] * (1 + 1e-9)).all())
assert gain_never_up                                  # provable: C_p ⪰ 0 can only lower the key gain
q_up = bool((g["lemma43_q_norm"].diff().dropna() >= 0).all())
cp_up = bool((g["lemma43_cp_norm"].diff().dropna() >= 0).all())
print(f"key gain never increased by C_p: {gain_never_up}")
print(f"mean ||Q||_2 non-decreasing in the number of earlier batches: {q_up}")
print(f"||C_p||_2 non-decreasing: {cp_up}")

# %% [markdown]
# ## 4b. The sequence, applied
#
# The sweep of §3 holds the current residuals and keys at their unedited values, so only `C_p`
# moves and an *accumulation* of error cannot appear by construction. Here the earlier batches are
# really edited into the model, one after another with MEMIT-seq (each batch's keys read on the model
# it was applied to, as the reference does); after `t` of them the current batch's residuals (fresh
# v* at every critical layer) and keys are measured on the edited model, and the deviation and
# bound are computed there. The weights are restored afterwards.

# %%
if applied_seq_lengths:
    applied = analysis.applied_sequence_sweep(model, tok, cur, earlier, applied_seq_lengths, layers, cfg,
                                              templates=templates, C=C, earlier_batch_size=seq_batch_size)
    assert applied.holds_fraction == 1.0
    applied_df = pd.DataFrame(applied.rows).query("distance > 0")
    display(applied_df.groupby("seq_length")[["deviation", "bound", "q_norm", "lemma43_cp_norm"]].mean())  # noqa: F821
else:
    applied = None

# %% [markdown]
# ## 5. Claims and verdicts
#
# The paper: the error bound of Theorem 4.1 holds (a theorem: one counterexample would refute our
# computation, not the paper), and the deviation `‖R^{l*} − R^L‖` and its bound grow with the
# distance `L − l`, the batch size (through `‖Q‖`) and the number of earlier batches (Lemma 4.3).
# Growth is tested as Spearman's rank correlation with a bootstrap interval over the rows (rows
# share requests and layers, so the interval is approximate). The sequence-length sweep reads the
# earlier keys on the unedited model with the current residuals held fixed (§3): only `C_p` varies,
# so an accumulation of error across applied edits *cannot* appear in it; its verdict is about `C_p`
# inside `Q` only. The applied sweep of §4b is the test of the statement itself; the recorded
# sequential runs (notebook 09) are the evidence about accumulated damage at scale.

# %%
def moving(rows):
    return [r for r in rows if r["distance"] > 0]


claims = {
    "theorem41_bound_holds": all_hold_claim(
        "the Theorem 4.1 bound holds for every (request, layer), batch-size and sequence-length case",
        [r["holds"] for r in pairs.rows + by_batch.rows + by_seq.rows + (applied.rows if applied else [])]),
    "deviation_grows_with_distance": correlation_claim(
        "the residual deviation grows with the distance L − l", pair_df["distance"], pair_df["deviation"],
        note="rows: (request, layer) pairs"),
    "bound_grows_with_distance": correlation_claim(
        "the error bound grows with the distance L − l", pair_df["distance"], pair_df["bound"],
        note="rows: (request, layer) pairs"),
    "deviation_grows_with_batch_size": correlation_claim(
        "the deviation grows with the batch size", [r["batch_size"] for r in moving(by_batch.rows)],
        [r["deviation"] for r in moving(by_batch.rows)], note="rows: (batch, layer) with l < L"),
    "deviation_grows_with_C_p_only": correlation_claim(
        "the deviation grows with the number of earlier batches folded into C_p (frozen sweep, §3)",
        [r["seq_length"] for r in moving(by_seq.rows)], [r["deviation"] for r in moving(by_seq.rows)],
        note="earlier keys read on the unedited model, residuals fixed: accumulation cannot show"),
}
if applied is not None:
    claims["deviation_grows_with_applied_batches"] = correlation_claim(
        "the deviation grows with the number of earlier batches applied to the model (Lemma 4.3, §4b)",
        [r["seq_length"] for r in moving(applied.rows)], [r["deviation"] for r in moving(applied.rows)],
        note=f"rows: (t, layer) with l < L; {seq_batch_size} requests per batch, MEMIT-seq")
claims_frame(claims)[["ours", "low", "high", "n", "verdict", "note"]]

# %% [markdown]
# The paper's own limitations section notes that a growing upper bound does not imply a growing
# error, and §4 above shows the per-batch `‖Q‖` need not grow with the sequence at all.

# %% [markdown]
# ### The recorded tier
#
# The same claims from this notebook's committed full-profile run (`python -m bluebook
# record-notebook 05`, under `results/notebooks/05_bounds/` with its command, commit, date,
# machine and wall time). Where the live interval cannot decide, the verdict is taken from there and
# the note says so; without a committed run the live verdict stands alone.

# %%
recorded = recorded_claims("05_bounds", recorded_notebooks)
print(f"recorded tier: {len(recorded)} claims" if recorded else "recorded tier: no full-profile run committed yet")
claims = verdicts.combined(claims, recorded)
claims_frame(claims)[["ours", "low", "high", "n", "verdict", "evidence"]]

# %%
metrics = {
    "model": model_name, "layers": layers, "target_steps": cfg.target.steps,
    "bound_holds_fraction": bound_holds_fraction,
    "bound_holds_fraction_batch_sweep": by_batch.holds_fraction,
    "bound_holds_fraction_seq_sweep": by_seq.holds_fraction,
    "n_pairs": len(pairs), "n_requests": len(req_res), "n_batch_rows": len(by_batch), "n_seq_rows": len(by_seq),
    "batch_sizes": sorted({r["batch_size"] for r in by_batch.rows}), "seq_lengths": sorted(seq_lengths),
    "spearman_deviation_distance": spearman_distance,
    "spearman_bound_distance": spearman_bound_distance,
    "spearman_deviation_batch_size": spearman_batch,
    "spearman_deviation_seq_length": spearman_seq,
    "mean_deviation_by_distance": {str(k): v for k, v in pair_df.groupby("distance")["deviation"].mean().items()},
    "mean_bound_by_distance": {str(k): v for k, v in pair_df.groupby("distance")["bound"].mean().items()},
    "mean_tightness": float(pair_df.loc[pair_df["distance"] > 0, "tightness"].mean()),
    "mean_deviation_by_batch_size": {str(k): v for k, v in pd.DataFrame(by_batch.rows).query("distance > 0")
                                     .groupby("batch_size")["deviation"].mean().items()},
    "mean_deviation_by_seq_length": {str(k): v for k, v in g["deviation"].items()},
    "mean_q_norm_by_seq_length": {str(k): v for k, v in g["lemma43_q_norm"].items()},
    "mean_cp_norm_by_seq_length": {str(k): v for k, v in g["lemma43_cp_norm"].items()},
    "lemma43_key_gain_never_increased": gain_never_up,
    "lemma43_q_norm_nondecreasing": q_up,
    "applied_seq_lengths": list(applied_seq_lengths), "n_applied_rows": len(applied.rows) if applied else 0,
    "mean_deviation_by_applied_seq_length": {} if applied is None else
    {str(k): v for k, v in applied_df.groupby("seq_length")["deviation"].mean().items()},
    "claims": claims,
}
write_metrics(output_dir, metrics)


# %% [markdown]
# ## Exercises
#
# Each exercise asks for one small function. Fill in its body (replace `raise NotImplementedError`),
# then run the cell below it: it checks your function on random inputs and prints a verdict, or
# "not attempted yet" while the stub is unchanged. Apart from `torch` and `numpy as np`, the
# exercises use nothing from the cells above.
# Solutions: `solutions/05_bounds_solutions.py`.
#
# **Exercise 5.1 — Theorem 4.1: the deviation and its bound.**
# Write `theorem41_terms(R_direct, R_last, Q, distance)` returning the tuple `(deviation, bound)` of
# floats for `D = distance = L − l`: the weight deviation `‖(R^{l*} − R^L/(D+1)) Q‖₂` and the bound
# `(‖R^{l*} − R^L‖₂ + D·‖R^L‖₂)·‖Q‖₂`, all spectral norms (`torch.linalg.matrix_norm(X, ord=2)`). The checker
# compares the deviation with the difference of two MEMIT updates solved separately, the bound with
# `bluebook.analysis.theory.theorem41_bound`, and checks deviation ≤ bound.
#
# **Exercise 5.2 — the envelope of ‖Q‖₂.**
# The notebook's §4 uses the envelope `‖Q‖₂ ≤ 1 / (2·√λ_min(λC + C_p))`, valid for every batch of keys. Write
# `q_envelope(C, lam, C_p)` returning it as a float (`C_p` may be `None`, meaning no earlier batches;
# `torch.linalg.eigvalsh` returns eigenvalues in ascending order). The checker compares with
# `bluebook.analysis.theory.q_envelope`, checks that `‖Q‖₂` stays below it for 30 random batches, and
# that the batch `k = √λ_min · u_min` (the eigenvector of the smallest eigenvalue) reaches it.

# %%
def theorem41_terms(R_direct, R_last, Q, distance):
    """(deviation, bound) of Theorem 4.1; R_direct, R_last (d × n), Q (n × m), distance D = L − l."""
    raise NotImplementedError

# %%
import bluebook.exercises

bluebook.exercises.run(bluebook.exercises.check_theorem41, theorem41_terms)

# %%
def q_envelope(C, lam, C_p=None):
    """1 / (2 √λ_min(λC + C_p)) as a float; C and C_p (m × m) float64 tensors, C_p may be None."""
    raise NotImplementedError

# %%
import bluebook.exercises

bluebook.exercises.run(bluebook.exercises.check_q_envelope, q_envelope)
