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
# # 07 · Replication tables: sequential batch editing on CounterFact and zsRE
#
# **Paper section:** §5 main results (sequential batch editing tables; algorithms.md §9).
#
# **Learning goals**
# - run the reference protocol: edit `n` records in consecutive batches, **permanently**, then evaluate
#   *every* record on the final model (not each batch right after its edit, which inflates numbers);
# - compare each locate-then-edit method (MEMIT, AlphaEdit, RECT, PRUNE; the CI profile runs MEMIT and
#   AlphaEdit) with its BLUE variant on the same records, with the same batches, starting from the
#   same unedited weights;
# - read the results next to the paper's Llama3-8B / GPT-J numbers, and see what does and does not
#   transfer to a 135M-parameter model.
#
# **Runtime:** CI defaults (4 records in 2 batches of 2, both datasets, the equal-total v* budget,
# MEMIT and AlphaEdit with their BLUE variants): 5.8 minutes on 2 idle CPU cores in a fresh-clone
# `make run` (2026-12-02); zsRE's edits need more v* steps than CounterFact's. The full profile (`params/full/07_replication.yaml`: 2,000 records in
# batches of 100 with generation, all 8 variants) is a GPU job of several hours; it is resumable,
# so rerunning the notebook with the same `output_dir` continues where it stopped.

# %% tags=["parameters"]
model_name = "smollm2-135m"
datasets = ["counterfact", "zsre"]
# RECT and PRUNE are left out of the live run to keep `make run` within its 30 minutes. PRUNE's
# restraint acts only once the accumulated edit outgrows the weight (notebook 06 shows it is the
# identity at this size), so its rows would repeat MEMIT's; RECT is MEMIT with its update sparsified,
# and notebook 06 compares it with its BLUE variant live. The full profile (params/full) runs all eight.
methods = ["memit", "memit_blue", "alphaedit", "alphaedit_blue"]
n_edits = 4
batch_size = 2
target_steps = None        # v* steps per BLUE optimisation; None: the preset's (25, early stop at loss < 0.05)
budget_rule = "equal_total"  # the base's one optimisation gets 2 × target_steps, so both cap the total per request
generation = False
num_threads = 0
resume = True
recorded_dir = "../results/sequential"   # committed full-size sequential runs (notebook 09), the recorded tier
seed = 0
device = "auto"
output_dir = "artifacts/07"

# %%
import json
import math
import time
from pathlib import Path

import pandas as pd
import torch

import bluebook
from bluebook import runs
from bluebook.experiments import curves, verdicts
from bluebook.experiments import replicate as rp
from bluebook.experiments.paper import paper_rows
from bluebook.experiments.sequence import case_columns
from bluebook.metrics.claims import claims_frame
from bluebook.metrics.intervals import interval
from bluebook.model.device import resolve_device
from bluebook.plots import curves as cplots
from bluebook.plots import replication as rplots
from bluebook.plots import show

runs.seed_everything(seed)
if num_threads:                      # 0: torch's default; 1 is often fastest on a busy shared CPU
    torch.set_num_threads(int(num_threads))
dev = resolve_device(device)
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
# None keeps the model's preset; a number shortens the v* optimisation (CI only)
lm, tok = bluebook.load_model(model_name, device=dev, progress=False)
budget = bluebook.preset_for(lm, "memit").target.steps if target_steps is None else int(target_steps)
hparams = verdicts.budget_hparams(methods, budget, budget_rule)       # {method: overrides}
print(f"{model_name} on {dev}; {n_edits} records per dataset in batches of {batch_size}; v* caps per optimisation: "
      f"{ {m: h['target']['steps'] for m, h in hparams.items()} }")

# %% [markdown]
# ## The protocol in one call
#
# `bluebook.experiments.replicate.replicate` does, for each method: restore the unedited projection weights
# (exactly: the original of every edited layer is kept on the CPU), split the records into batches,
# call `bluebook.edit(..., state=state, apply=True)` batch after batch with **one**
# `SequentialState` per method (AlphaEdit and MEMIT-seq carry `K_p K_pᵀ` in it), and evaluate all
# records at the end. It also evaluates the unedited model once (the `unedited` row).
#
# After every batch it writes a checkpoint (edited layers' weights, the sequential state, a progress
# file) under `output_dir/runs/<dataset>/<method>/`. A rerun with the same settings skips finished
# methods and resumes unfinished ones; a rerun with *different* settings into the same folder stops
# with `CheckpointMismatch` instead of silently mixing runs.

# %%
results = {}
t_start = time.perf_counter()
for ds in datasets:
    t0 = time.perf_counter()
    results[ds] = rp.replicate((lm, tok), ds, methods=methods, n=n_edits, batch=batch_size,
                               out=out / "runs" / ds, hparams=hparams, device=dev,
                               generation=bool(generation and ds == "counterfact"), resume=resume,
                               progress=False, seed=seed, model_name=model_name, eval_every=batch_size)
    print(f"== {ds}: {time.perf_counter() - t0:.0f} s")
    print(rp.results_table(results[ds]))
runtime_s = time.perf_counter() - t_start

# %% [markdown]
# ## Beside the paper's numbers
#
# The paper edits 2,000 records in batches of 100 on 6–8B models; here a 135M model gets a handful
# of records. The reference rows (algorithms.md §9.4) are printed for orientation only: the *pattern*
# to look for is "BLUE ≥ base" on each pair, not the absolute values. The paper's tables for RECT and
# PRUNE are not in our notes, so those rows have no reference.

# %%
KEYS = ("efficacy", "generalization", "specificity")
tables = {}
for ds in datasets:
    rows = results[ds]["methods"]
    table = {f"ours: {m}": {k: rows[m]["summary"][k] for k in KEYS}
             for m in ["unedited"] + [m for m in rp.PAPER_ORDER if m in rows]}
    for model, prow in paper_rows(ds).items():        # bluebook.experiments.paper.PAPER_TABLES
        table.update({f"paper {model}: {m}": {k: v[k] for k in KEYS} for m, v in prow.items()})
    tables[ds] = pd.DataFrame(table).T.round(2)
    print(f"{ds}: ours ({model_name}, n={n_edits}, batch={batch_size}) and the paper's rows (2,000 edits)")
    display(tables[ds])  # noqa: F821 (IPython)

# %% [markdown]
# ## Figures
#
# Left to right: Efficacy, Generalization and Specificity per method, the base method in grey and its
# BLUE variant in blue; the dashed line is the unedited model. The heatmap is the same table.

# %%
figs = {}
for ds in datasets:
    figs[f"bars_{ds}"] = rplots.method_bars(results[ds], title=f"{ds}: sequential editing, n={n_edits}")
    figs[f"heatmap_{ds}"] = rplots.results_heatmap(results[ds], title=ds)
for name, fig in figs.items():
    show(fig, output_dir, name)

# %% [markdown]
# ### Metrics against the number of edits (the live run)
#
# The paper's central claim is about *sequences*: the damage of residual distribution accumulates
# over many batches, so base methods fall behind as edits pile up. The live run is evaluated after
# every batch on the records edited so far (here only a couple of points; notebook 09 draws the
# recorded 1,000-edit curves, evaluated every 500 edits).

# %%
for ds in datasets:
    live_run = curves.load_run(out / "runs" / ds)
    show(cplots.metric_curves(curves.curve_rows(live_run), title=f"{ds}: live run, records edited so far"),
         output_dir, f"curves_{ds}")

# %% [markdown]
# ### Our numbers beside the paper's rows
#
# Bars: ours (the live run, with 95 % intervals) and the paper's Llama3-8B / GPT-J rows at 2,000
# edits, for the methods the paper's tables report. Absolute values are not expected to match (a
# 135M model, a handful of edits); compare the pattern within each pair.

# %%
columns = {ds: {m: case_columns(json.loads(Path(results[ds]["methods"][m]["cases"]).read_text()), ds)
                for m in methods} for ds in datasets}
for ds in datasets:
    ours = {m: {k: results[ds]["methods"][m]["summary"][k] for k in KEYS} for m in methods}
    ivs = {m: {k: (e.low, e.high) for k in KEYS for e in [interval(columns[ds][m][k], scale=100.0)]}
           for m in methods}
    show(rplots.beside_paper(ours, paper_rows(ds), ours_label=f"ours ({model_name}, n={n_edits})",
                             title=f"{ds}: ours beside the paper", intervals=ivs), output_dir, f"beside_paper_{ds}")

# %% [markdown]
# ## Checks
#
# What must hold for any settings: every number is finite and within [0, 100], and every edited
# model is at least as good as the unedited one on the *edited* prompts (Efficacy). The second check
# holds on the CI settings for every variant on both datasets (unedited CounterFact efficacy is the
# fraction of prompts where the model already prefers the new object, and zsRE's is the token
# accuracy of the unedited model — both low). We do **not** assert that BLUE beats its base method:
# with 4 records and 2 batches the sequential error the paper analyses has barely accumulated, so the
# difference can go either way; the table above reports it as measured.

# %%
for ds in datasets:
    rows = results[ds]["methods"]
    for m, r in rows.items():
        for k in KEYS:
            v = r["summary"][k]
            assert v is not None and math.isfinite(v) and 0.0 <= v <= 100.0, (ds, m, k, v)
    base_eff = rows["unedited"]["summary"]["efficacy"]
    for m in methods:
        assert rows[m]["summary"]["efficacy"] >= base_eff, (ds, m, rows[m]["summary"]["efficacy"], base_eff)

pairs = [m for m in methods if not m.endswith("_blue") and m + "_blue" in methods]
for ds in datasets:
    rows = results[ds]["methods"]
    for b in pairs:
        d = {k: round(rows[b + "_blue"]["summary"][k] - rows[b]["summary"][k], 2) for k in KEYS}
        print(f"{ds:12s} {b:10s} BLUE − base: {d}")

# %% [markdown]
# ## Fair budgets
#
# BLUE optimises a target twice per request (at the first critical layer, then at the last one on
# the model that already holds the first update); its base method optimises once, at the last
# layer. With a small step budget that alone hands BLUE up to twice the optimisation and decides the
# comparison (an earlier version of this notebook ran 5 steps and saw BLUE "win" by 50 points).
# Here both get the same *total* per request (`budget_rule = "equal_total"`): each of BLUE's two
# optimisations is capped at the preset's 25 steps, its base's single one at 50, all with early
# stopping. (The same 25-step cap for every optimisation, `"same_cap"`, still favours BLUE wherever
# the base needs more than 25 steps: on zsRE it hit the cap for 5 requests in 6, and BLUE's second
# optimisation added 12 steps per request.) The table shows the mean steps per optimised layer,
# the total per request and the share of optimisations that used their whole cap.

# %%
caps = {m: h["target"]["steps"] for m, h in hparams.items()}
budgets = {ds: verdicts.step_budget(out / "runs" / ds, methods, caps) for ds in datasets}
for ds in datasets:
    print(f"{ds}: {budget_rule}, caps {caps}")
    for m, b in budgets[ds].items():
        print(f"  {m:16s} steps per layer {b['layers']}, per request {b['per_request']}, capped {b['capped']:.0%}")

# %% [markdown]
# ## Claims and verdicts
#
# The paper's statement is that every BLUE variant outperforms its base method on efficacy,
# generalization and specificity. For each pair and metric the evidence is the paired difference
# BLUE − base on the same records (×100) with a 95 % paired-bootstrap interval: *agrees* when the
# interval lies above 0, *disagrees* below, *inconclusive* when it covers 0.
#
# Two tiers: the **live** run above (a handful of records: it shows the computation, and its
# intervals are wide), and the **recorded** sequential runs committed under `results/sequential/`
# (1,000 CounterFact / 500 zsRE records in batches of 100, evaluated along the way; notebook 09 draws
# them, with the command, commit, machine and wall time of every sitting). Where the live run cannot
# carry the claim — its interval covers 0, or it is a small sample beside a larger recorded run —
# the verdict comes from the recorded run and its note says so; a pair the recorded runs have not
# reached yet keeps the live verdict. Where a recorded run has been repeated for its base methods at
# an equal total v* budget (`<run>_equal_total`, notebook 09 §7), the recorded claim is that one,
# the same budget rule as the live run here; otherwise it is the same-cap run's, and its note says so.
# So a recorded claim's *n* is the number of records at the largest point both methods reached under
# that rule: CounterFact's equal-total run stopped at 500 of its 1,000 edits, so its claims have
# n = 500 although the same-cap run reached 1,000; each note names the point.

# %%
live_claims = {}
for ds in datasets:
    live_claims.update(verdicts.blue_vs_base(columns[ds], ds,
                                             note=f"{n_edits} records in batches of {batch_size}"))
recorded_claims = verdicts.recorded_sequential_claims(recorded_dir, datasets)
provenance = {}
for folder in sorted(p for p in Path(recorded_dir).glob("*") if p.is_dir()):
    run = curves.load_run(folder)
    if run.dataset in datasets:
        provenance[folder.name] = curves.sittings(run)
claims = verdicts.combined(live_claims, recorded_claims)
claims_frame(claims)[["ours", "low", "high", "n", "verdict", "evidence", "note"]]

# %%
for k, c in claims.items():
    assert c["verdict"] in ("agrees", "disagrees", "inconclusive"), k
    if c["interval"] is not None:
        assert c["interval"][0] - 1e-9 <= c["ours"] <= c["interval"][1] + 1e-9, (k, c)
    if c["live"] is not None and c["live"]["n"] < 50:
        assert "small live sample" in c["live"]["note"], k
print({v: sum(c["verdict"] == v for c in claims.values()) for v in ("agrees", "disagrees", "inconclusive")})

# %% [markdown]
# ## Outputs
#
# `results.md` in `output_dir` collects both tables (each dataset's run folder also has its own
# `results.{json,csv,md}` and per-case JSON files); `metrics.json` holds, for each dataset and
# method, Efficacy / Generalization / Specificity, with each BLUE variant next to its base method.

# %%
parts = [f"# Replication tables ({model_name}, {n_edits} records, batches of {batch_size})", ""]
for ds in datasets:
    parts += [f"## {ds}", "", rp.results_table(results[ds])]
runs.atomic_write_text(out / "results.md", "\n".join(parts))

metrics = {"model": model_name, "n_edits": n_edits, "batch_size": batch_size, "target_steps": budget,
           "budget_rule": budget_rule, "target_caps": caps,
           "runtime_s": round(runtime_s, 1), "datasets": list(datasets), "step_budget": budgets,
           "claims": claims, "recorded_provenance": provenance}
for ds in datasets:
    rows = results[ds]["methods"]
    metrics[ds] = {m: {k: rows[m]["summary"][k] for k in KEYS} for m in ["unedited"] + list(methods)}
    for m in methods:
        metrics[ds][m]["edit_seconds"] = rows[m]["edit_seconds"]
    metrics[ds]["blue_vs_base"] = {
        b: {k: {"base": rows[b]["summary"][k], "blue": rows[b + "_blue"]["summary"][k]} for k in KEYS}
        for b in pairs}
    if ds == "counterfact":
        for m in ["unedited"] + list(methods):
            metrics[ds][m]["fluency"] = rows[m]["summary"].get("fluency")
            metrics[ds][m]["consistency"] = rows[m]["summary"].get("consistency")
runs.write_metrics(output_dir, metrics)


# %% [markdown]
# ## Exercises
#
# Each exercise asks for one small function. Fill in its body (replace `raise NotImplementedError`),
# then run the cell below it: it checks your function on random inputs and prints a verdict, or
# "not attempted yet" while the stub is unchanged. Apart from `torch` and `numpy as np`, the
# exercises use nothing from the cells above.
# Solutions: `solutions/07_replication_solutions.py`.
#
# **Exercise 7.1 — CounterFact efficacy from probabilities.**
# A CounterFact record counts as a success on a prompt when the model gives the new object a higher
# probability than the true one (a tie is a failure); a record's score is the mean over its prompts, and
# the table number is 100 × the mean over records. Write `efficacy_score(p_new, p_true)`, where `p_new[j]`
# and `p_true[j]` are lists of per-prompt probabilities of record `j` (records may have different numbers
# of prompts, as paraphrases do). The checker compares with an explicit loop on 40 random records.
#
# **Exercise 7.2 — the Wilson score interval.**
# With `p̂ = successes/n` and `z = Φ⁻¹((1 + confidence)/2)` (`statistics.NormalDist().inv_cdf`), the
# Wilson interval is `centre ± half` with `centre = (p̂ + z²/(2n)) / (1 + z²/n)` and
# `half = z·√(p̂(1 − p̂)/n + z²/(4n²)) / (1 + z²/n)`. Write `wilson_interval(successes, n, confidence)`
# returning `(low, high)`. The checker compares with `bluebook.metrics.intervals.wilson` (statsmodels),
# including 0/10 and 10/10, where the naive `p̂ ± z·√(p̂(1 − p̂)/n)` collapses to a point.
#
# **Exercise 7.3 — a paired bootstrap of BLUE minus base.**
# `a[j]` and `b[j]` are per-record scores of BLUE and its base method on the same record `j`. Write
# `paired_bootstrap(a, b, n_resamples, confidence, seed)` returning `(mean(a − b), low, high)`: draw
# `n_resamples` resamples of the record indices with replacement (`np.random.default_rng(seed)`), take the
# mean of `a − b` on each, and return the `(1 − confidence)/2` and `(1 + confidence)/2` quantiles of those
# means. Resample the records jointly: the same records for both methods. The checker compares with
# `bluebook.metrics.intervals.paired_difference` (within resampling noise) on strongly paired data, where
# resampling `a` and `b` separately gives an interval far too wide.

# %%
from statistics import NormalDist

import numpy as np


def efficacy_score(p_new, p_true):
    """100 × mean over records of the share of the record's prompts where p_new > p_true."""
    raise NotImplementedError

# %%
import bluebook.exercises

bluebook.exercises.run(bluebook.exercises.check_efficacy, efficacy_score)

# %%
def wilson_interval(successes, n, confidence=0.95):
    """(low, high) Wilson score interval of the rate successes / n."""
    raise NotImplementedError

# %%
import bluebook.exercises

bluebook.exercises.run(bluebook.exercises.check_wilson_interval, wilson_interval)

# %%
def paired_bootstrap(a, b, n_resamples=2000, confidence=0.95, seed=0):
    """(mean(a − b), low, high): paired percentile bootstrap over records; a, b numpy arrays of equal length."""
    raise NotImplementedError

# %%
import bluebook.exercises

bluebook.exercises.run(bluebook.exercises.check_paired_bootstrap, paired_bootstrap)
