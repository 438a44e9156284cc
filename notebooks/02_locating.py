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
# # 02 · Locating facts: causal tracing and the critical layers
#
# **Learning goals**
# - run causal tracing (ROME): corrupt the subject's embeddings with noise, restore one clean hidden
#   state (block output, MLP output or attention output) at one token and layer, and see how much of
#   the fact's probability comes back (the *indirect effect*);
# - read the token × layer heatmaps and the averaged curves at the subject's last token;
# - understand how the preset's critical-layer window for this model was chosen, from the recorded
#   50-prompt evidence in `bluebook/assets/smollm2_tracing.json`.
#
# **Runtime (CI profile, 2 CPU cores):** about 2–3 minutes on an idle machine (one heatmap prompt, two
# curve prompts, two noise draws; longer when the cores are shared). The full profile traces 50 known facts with three draws.
#
# **Paper section:** §3 "locate" step and the critical layers of §5 (the paper takes its windows from
# causal tracing: GPT2-XL 13–17, GPT-J 3–8, Llama3-8B 4–8).

# %% tags=["parameters"]
model_name = "smollm2-135m"
heatmap_prompts = [["The capital of {} is", "France", "Paris"]]
n_curve_prompts = 2
n_samples = 2
num_threads = 1
min_layer = 1
width = 5
seed = 0
device = "auto"
output_dir = "artifacts/02"

# %%
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import bluebook
from bluebook import locate, runs
from bluebook.model.device import resolve_device
from bluebook.plots import locate as locate_plots
from bluebook.plots import show

runs.seed_everything(seed)
dev = resolve_device(device)
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
if num_threads:
    torch.set_num_threads(num_threads)   # many small batched products: one thread is often faster on a busy CPU
model, tok = bluebook.load_model(model_name, device=dev, progress=False)
cfg = bluebook.preset_for(model, "memit")
n_layers = model.config.num_hidden_layers
recorded = json.loads(resources.files("bluebook").joinpath("assets/smollm2_tracing.json").read_text())
noise = locate.embedding_noise_scale(model)
print(f"noise scale = {noise:.3f} (3 × embedding std); preset critical layers {list(cfg.layers)}")

# %% [markdown]
# ## Heatmaps: one prompt at a time
#
# Each panel shows p(target) with one module's clean output restored at one (token, layer) cell of
# a corrupted run. Subject tokens are starred. Positions before the subject are never affected by the
# noise, so they equal the corrupted probability.

# %%
traces = []
for i, (tmpl, subj, tgt) in enumerate(heatmap_prompts):
    r = locate.trace_prompt(model, tok, tmpl, subj, tgt, n_samples=n_samples, noise=noise, seed=seed + i)
    traces.append(r)
    fig = locate_plots.trace_heatmap(r)
    show(fig, out, f"heatmap_{i}")
    print(f"{r.prompt!r}: clean {r.high:.3f}, corrupted {r.low:.3f}")
    assert r.high > r.low, "corrupting the subject must lower p(target)"

# %% [markdown]
# Restoring the **block output** (the whole residual stream) at the subject's last token recovers
# the fact over many early and middle layers, and at the last token in the late layers: the
# information is carried at the subject and later moved to the prediction position by attention.
# The MLP and attention panels restore a single layer's contribution, so their effects are smaller.

# %%
r0 = traces[0]
s_last = r0.subject_range[1]
block_ie = r0.indirect_effect("block")[s_last]
mid = slice(1, n_layers // 2)
print("block IE at the subject's last token, layers 1..:", np.round(block_ie[1:n_layers // 2], 3))
assert np.nanmean(block_ie[mid]) > 0.05 * (r0.high - r0.low)

# %% [markdown]
# ## Averaged curves at the subject's last token
#
# ROME averages the indirect effects over known facts. Here the live run uses only a few CounterFact
# prompts the model knows (top-1), and only the subject's last token (cheap); the recorded evidence
# is the same computation on 50 known facts.

# %%
known = locate.filter_known(model, tok, bluebook.load_counterfact(n=200), top_k=1, limit=n_curve_prompts)
live = locate.trace_many(model, tok, known, n_samples=n_samples, noise=noise, seed=seed + 100,
                         positions="subject_last")
rec = {k: np.asarray(v, dtype=float) for k, v in recorded["ie_subject_last"].items()}
fig = locate_plots.ie_curves({f"mlp (live, {live.n_prompts} prompts)": live.curves["mlp"],
                              f"mlp (recorded, {recorded['n_prompts']} prompts)": rec["mlp"],
                              "attn (recorded)": rec["attn"]},
                             highlight=list(cfg.layers), title="MLP indirect effect at the subject's last token")
show(fig, out, "ie_curves_mlp")
fig2 = locate_plots.ie_curves({"block (recorded)": rec["block"], "block (live)": live.curves["block"]},
                              highlight=list(cfg.layers), title="block-output indirect effect at the subject's last token")
show(fig2, out, "ie_curves_block")
pd.DataFrame({"mlp live": live.curves["mlp"], "mlp recorded": rec["mlp"], "block recorded": rec["block"]}).T.round(3)

# %% [markdown]
# ## Choosing the critical layers
#
# * The largest single MLP effect is at **layer 0** (recorded: `peak_mlp_layer = 0`). The first MLP
#   of a transformer largely re-encodes the token it sits on (an extension of the embedding), so
#   restoring it undoes part of the *noise* whatever the fact is. It is not where facts are
#   recalled, and ROME/MEMIT never edit it.
# * Looking past it (`min_layer = 1`), the 5-layer window with the largest summed MLP effect on the
#   recorded curve is computed below with `locate.propose_critical_layers`.
# * The preset uses **layers 4–8**: the window the search returns past layer 0, and the window the
#   paper uses for Llama3-8B (the same architecture family), with the BLUE boundary layers 4 and 8.
#
# **Where this differs from the paper.** On GPT2-XL/GPT-J the MLP curve has a clear bump in the
# early-middle layers. On this 135M model the per-layer MLP effects are an order of magnitude
# smaller than the block effect and almost flat, so the window is a weak choice among near-equals;
# the CI run with a few prompts and two noise draws is noisier still and can put its peak elsewhere.

# %%
peak_live = locate.peak_layer(live, "mlp")
peak_live_past0 = locate.peak_layer(live, "mlp", min_layer=min_layer)
peak_rec_past0 = locate.peak_layer(rec["mlp"], "mlp", min_layer=min_layer)
win_rec = locate.propose_critical_layers(rec["mlp"], width=width, min_layer=min_layer)
win_rec_all = locate.propose_critical_layers(rec["mlp"], width=width)
win_live = locate.propose_critical_layers(live, width=width, min_layer=min_layer)
critical = list(cfg.layers)
summary = pd.DataFrame({
    "peak MLP layer": [recorded["peak_mlp_layer"], peak_live],
    f"peak MLP layer ≥ {min_layer}": [peak_rec_past0, peak_live_past0],
    "best window (all layers)": [win_rec_all, locate.propose_critical_layers(live, width=width)],
    f"best window (≥ {min_layer})": [win_rec, win_live],
}, index=[f"recorded ({recorded['n_prompts']} prompts)", f"live ({live.n_prompts} prompts)"])
print("preset critical layers:", critical)
assert int(np.argmax(rec["mlp"])) == recorded["peak_mlp_layer"]
assert critical == list(range(critical[0], critical[-1] + 1)), "critical layers must be consecutive"
assert set(win_rec) & set(critical), "the recorded evidence window should overlap the preset window"
summary

# %%
metrics = {
    "peak_mlp_layer": int(peak_live),
    "peak_mlp_layer_min1": int(peak_live_past0),
    "peak_mlp_layer_recorded": int(recorded["peak_mlp_layer"]),
    "peak_mlp_layer_recorded_min1": int(peak_rec_past0),
    "critical_layers": [int(x) for x in critical],
    "proposed_window_recorded_min1": [int(x) for x in win_rec],
    "proposed_window_live_min1": [int(x) for x in win_live],
    "n_curve_prompts": live.n_prompts,
    "n_samples": n_samples,
    "heatmap_high": [r.high for r in traces],
    "heatmap_low": [r.low for r in traces],
    "mean_block_ie_subject_last_live": float(np.nanmean(live.curves["block"])),
    "mean_mlp_ie_subject_last_live": float(np.nanmean(live.curves["mlp"])),
    "trace_seconds_live": live.seconds,
}
runs.write_metrics(out, metrics)
bluebook.runs.jsonable(metrics)  # what metrics.json holds
