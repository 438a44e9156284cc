"""Write notebooks 00–03 (tour, key-value memory, locating, closed-form edits) with nbformat.

The notebooks are generated from the cell lists below so that they stay reviewable as Python and
are always committed without outputs. Run: ``python scripts/build_notebooks_00_03.py``.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks"


def md(s):
    return new_markdown_cell(s.strip("\n"))


def code(s, tags=None):
    c = new_code_cell(s.strip("\n"))
    if tags:
        c.metadata["tags"] = list(tags)
    return c


def params(s):
    return code(s, tags=["parameters"])


# =============================================================================================
TOUR = [
    md("""
# 00 · A tour of the embedded model and the edit datasets

**Learning goals**
- load the embedded SmolLM2-135M-Instruct model (30 blocks, d = 576, MLP width m = 1536) with one call;
- see what it "knows": its top next tokens on factual prompts from CounterFact;
- read one CounterFact and one zsRE record as `bluebook.EditRequest`s (prompt template, subject,
  new and true target, paraphrases, neighbourhood prompts).

**Runtime (CI profile, 2 CPU cores):** under 1 minute.

**Paper section:** §2 / §5.1 (the setting and the datasets, CounterFact and zsRE). The paper edits
GPT2-XL, GPT-J and Llama3-8B; everything here runs on a 135M model so it fits a laptop CPU.
"""),
    params("""
model_name = "smollm2-135m"
n_prompts_table = 6
n_known_check = 40
top_k = 5
seed = 0
device = "auto"
output_dir = "artifacts/00"
"""),
    code("""
from pathlib import Path

import pandas as pd
import torch

import bluebook
from bluebook import locate, runs
from bluebook.plots import edits as edit_plots, save

runs.seed_everything(seed)
dev = runs.resolve_device(device)
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
model, tok = bluebook.load_model(model_name, device=dev)
spec = bluebook.spec_for(model)
cfg = bluebook.preset_for(model, "memit")
"""),
    md("""
## The model

`load_model` returns a Hugging Face causal LM in fp32, in eval mode, with gradients off, and its
tokenizer (right padding). `spec_for(model)` knows where the pieces the editing methods touch live:
the block outputs (the residual stream `h^l`) and the MLP output projection whose weight `W^l`
(`d × m`) every locate-then-edit method rewrites.
"""),
    code("""
W = bluebook.specs.math_weight(model, cfg.layers[0])
info = {
    "family": spec.family,
    "n_layers": model.config.num_hidden_layers,
    "d (hidden)": model.config.hidden_size,
    "m (MLP inner = key dim)": W.shape[1],
    "edited module": spec.proj_name(cfg.layers[0]),
    "parameters (M)": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
    "preset critical layers": list(cfg.layers),
}
assert W.shape == (model.config.hidden_size, model.config.intermediate_size)
pd.Series(info)
"""),
    md("""
## What does it know?

The top next tokens after a few factual prompts. `topk` below is just a softmax over the last
position's logits.
"""),
    code("""
@torch.no_grad()
def topk(prompt, k=top_k):
    enc = tok(prompt, return_tensors="pt").to(dev)
    p = model(**enc).logits[0, -1].float().softmax(-1)
    v, i = p.topk(k)
    return [(tok.decode(int(j)), float(x)) for x, j in zip(v, i)]

france = topk("The capital of France is")
france_top1, france_p = france[0]
print(france)
assert france_top1.strip() == "Paris"
"""),
    code("""
cf = bluebook.load_counterfact(n=max(n_prompts_table, n_known_check))
rows = []
for r in cf[:n_prompts_table]:
    top = topk(r.text)
    rows.append({"prompt": r.text, "true": r.target_true, "top": top})
table = pd.DataFrame([{"prompt": r["prompt"], "true target": r["true"],
                       **{f"#{i + 1}": f"{t!r} {p:.2f}" for i, (t, p) in enumerate(r["top"])}} for r in rows])
fig = edit_plots.topk_table(rows, title="top next tokens on CounterFact prompts")
save(fig, out, "topk_counterfact")
table
"""),
    md("""
A small model knows far fewer facts than the paper's 6–8B models. `locate.known_ranks` gives the
rank of the true target's first token among all next tokens (0 = top-1); ROME calls the prompts
with rank 0 "known facts" and traces only those (notebook 02).
"""),
    code("""
ranks = locate.known_ranks(model, tok, cf[:n_known_check])
frac_known = sum(r == 0 for r in ranks) / len(ranks)
frac_top10 = sum(r < 10 for r in ranks) / len(ranks)
print(f"true target is top-1 on {frac_known:.0%} and top-10 on {frac_top10:.0%} of the first {len(ranks)} prompts")
assert 0.0 < frac_known < 1.0 and frac_top10 >= frac_known
"""),
    md("""
## One CounterFact record and one zsRE record

A CounterFact case asks to rewrite `(subject, relation, true object)` to a *counterfactual* new
object. Efficacy is measured on the rewrite prompt, generalisation on paraphrases (which prepend
unrelated text), specificity on neighbourhood prompts about *other* subjects with the same true
object. zsRE cases are questions; their `target_true` is a dummy and specificity uses one unrelated
question (`neighborhood_answer`).
"""),
    code("""
zs = bluebook.load_zsre(n=1)
def show(req):
    d = req.to_dict()
    keep = ["dataset", "case_id", "prompt", "subject", "target_new", "target_true", "paraphrase_prompts",
            "neighborhood_prompts", "neighborhood_answer"]
    return pd.Series({k: (list(d[k])[:3] if isinstance(d[k], (list, tuple)) else d[k]) for k in keep})

pd.concat({"CounterFact": show(cf[0]), "zsRE": show(zs[0])}, axis=1)
"""),
    code("""
assert "{}" in cf[0].prompt and cf[0].subject in cf[0].text
assert cf[0].paraphrase_prompts and cf[0].neighborhood_prompts
metrics = {
    "model": model_name,
    "n_layers": model.config.num_hidden_layers,
    "hidden_size": model.config.hidden_size,
    "mlp_size": model.config.intermediate_size,
    "france_top1": france_top1.strip(),
    "france_top1_prob": france_p,
    "n_known_check": len(ranks),
    "frac_true_top1": frac_known,
    "frac_true_top10": frac_top10,
    "counterfact_case0": cf[0].text,
    "zsre_case0": zs[0].text,
}
runs.write_metrics(out, metrics)
metrics
"""),
]

# =============================================================================================
KV = [
    md("""
# 01 · The MLP output projection as a key–value memory

**Learning goals**
- read a *key* `k` (the input of the MLP output projection at the subject's last token) and the
  *value* `W k` it produces, and check that the value is exactly the MLP's output there;
- project the value through the final norm and unembedding ("logit lens") to see which tokens it
  pushes up;
- remove or swap the values written at the critical layers (forward hooks) and measure how the
  probability of the fact changes;
- the least-squares view `W K ≈ M` and the key second moment `C = E[k kᵀ]`: re-derive the normal
  equations and check them against `torch.linalg.lstsq` and `bluebook.layer_stats`.

**Runtime (CI profile, 2 CPU cores):** about 1 minute (the layer statistics are read from the disk
cache; a first run computes them in 1–3 minutes).

**Paper section:** §3 "Preliminaries" (FFN as key–value memory,
`m^l = W_out^l σ(W_in^l γ(h^{l-1} + a^l))`, and the least-squares objective `W K₀ ≈ M₀`).
"""),
    params("""
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
"""),
    code("""
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

import bluebook
from bluebook import hooks, locate, runs, specs
from bluebook.keys import read_states
from bluebook.plots import save
from bluebook.stats import collect_second_moments

runs.seed_everything(seed)
dev = runs.resolve_device(device)
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
model, tok = bluebook.load_model(model_name, device=dev)
spec = bluebook.spec_for(model)
cfg = bluebook.preset_for(model, "memit")
layers = list(cfg.layers)
l = layers[-1]                        # the last critical layer: where MEMIT measures its residual
text = prompt.format(subject)
s_last = bluebook.tokens.subject_last_index(tok, prompt, subject)
target_id = locate.target_token_id(tok, text, target)
swap_id = locate.target_token_id(tok, prompt.format(swap_subject), swap_target)
print(f"critical layers {layers}; studying layer {l}; subject's last token is #{s_last}: "
      f"{tok.convert_ids_to_tokens(tok(text)['input_ids'])[s_last]!r}")
"""),
    md("""
## Key and value at the subject's last token

`Trace` records the *input* of the projection (`k ∈ R^m`, the SiLU-gated product of the Llama MLP)
and the MLP module's *output* (`∈ R^d`). The projection is linear without bias, so the value must
equal `W k` exactly.
"""),
    code("""
enc = tok(text, return_tensors="pt").to(dev)
with torch.no_grad(), hooks.Trace(model, [spec.proj_name(l)], inputs=True, outputs=False) as tin, \\
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
"""),
    md("""
### What does the value push toward?

Apply the model's final norm and unembedding to the value alone (a "logit lens" on one MLP
write). A single layer's value is only one term of the residual stream, so the list is noisy; the
point is that it is a vector in the same space the unembedding reads.
"""),
    code("""
norm = specs.get_module(model, spec.ln_f)
head = model.get_output_embeddings()
with torch.no_grad():
    lens = head(norm(v[None, None, :]))[0, 0].float()
top = lens.topk(10).indices.tolist()
print("tokens the value pushes up most:", [tok.decode(i) for i in top])
print(f"rank of {target!r} in the value's logit lens: {int((lens > lens[target_id]).sum())} of {lens.numel()}")
"""),
    md("""
## Remove the values, or swap them for another subject's

Forward hooks (`hooks.edit_output`) rewrite the MLP output at the subject's last token only:

* **zero**: the MLP writes nothing there, at one layer or at all critical layers;
* **swap**: it writes the value it produces for another subject (read from the swap prompt).

Causal tracing (notebook 02) found small per-layer MLP effects on this model, so a single layer
matters little; the window of critical layers together matters more.
"""),
    code("""
swap_text = prompt.format(swap_subject)
swap_last = bluebook.tokens.subject_last_index(tok, prompt, swap_subject)
with torch.no_grad(), hooks.Trace(model, [spec.mlp_name(j) for j in layers]) as tsw:
    model(**tok(swap_text, return_tensors="pt").to(dev))
swap_vals = {j: tsw.outputs[spec.mlp_name(j)][0, swap_last].clone() for j in layers}

@torch.no_grad()
def probs_with(replace: dict):
    \"\"\"p(target), p(swap target) when the MLP output at the subject's last token is replaced per layer.\"\"\"
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
"""),
    code("""
p_zero_all = table.iloc[len(layers) + 1, 0]
p_swap_t, p_swap_s = table.iloc[-1]
p_clean_swap = table.iloc[0, 1]
drop_all = p_clean - p_zero_all
drop_single = {j: p_clean - table.iloc[1 + i, 0] for i, j in enumerate(layers)}
fig = Figure(figsize=(7, 3.2))
ax = fig.subplots()
table.plot.barh(ax=ax)
ax.set_xlabel("probability of the next token")
fig.tight_layout()
save(fig, out, "value_interventions")
print(f"removing the values at all critical layers: p({target}) {p_clean:.3f} -> {p_zero_all:.3f}")
print(f"swapping in {swap_subject}'s values: p({swap_target}) {p_clean_swap:.4f} -> {p_swap_s:.4f}")
assert drop_all > 0, "removing the critical-layer values should lower p(target)"
"""),
    md("""
## The least-squares view: `W K ≈ M`

Stack many keys as columns of `K ∈ R^{m×N}` and their values as `M = W K`. Among all matrices,
`W` is a minimiser of `‖Ŵ K − M‖²`. Setting the gradient `2 (Ŵ K − M) Kᵀ` to zero gives the
**normal equations** `Ŵ (K Kᵀ) = M Kᵀ`, i.e. `Ŵ = M Kᵀ (K Kᵀ)⁻¹` when `K Kᵀ` is invertible.
`K Kᵀ / N` is the uncentred second moment `C = E[k kᵀ]` that `bluebook.layer_stats` accumulates
over Wikipedia text (notebook 03 puts it into the edit's objective).

Below we read the keys of every token of a few Wikipedia summaries, solve the normal equations in
float64, and compare with `torch.linalg.lstsq` and with the fit itself.
"""),
    code("""
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
"""),
    md("""
`K Kᵀ / N` computed here equals what `bluebook.stats.collect_second_moments` accumulates on the same
texts (it only batches and pads). The cached `layer_stats` (1,000 documents) is the same estimator
on more text; its spectrum shows how unevenly keys fill `R^m`: a few directions carry most of the
energy, which is why `C` is a useful "what else is stored here" weight.
"""),
    code("""
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
save(fig, out, "key_spectrum")
print(f"{n90} of {eig.size} directions hold 90% of E[‖k‖²]; cosine(small-sample C, cached C) = {cos:.3f}")
assert n90 < eig.size and cos > 0.8
"""),
    md("""
How does our key look under `C`? `kᵀ C⁻¹ k` is its squared Mahalanobis length. Averaged over keys
drawn like the ones `C` was built from it equals `tr(C⁻¹ E[k kᵀ]) = m`; the printout compares the
subject key with the Wikipedia tokens read above. The same number sets how much of its residual a
MEMIT update writes into this key (notebook 03: the fraction is `s/(1+s)` with `s = kᵀC⁻¹k / λ`).
"""),
    code("""
kd = k.double()
maha = float(kd @ torch.linalg.solve(C, kd))
typical = float((K0 * torch.linalg.solve(C, K0)).sum(0).median())
print(f"kᵀC⁻¹k for the subject key = {maha:.0f}; median over the Wikipedia tokens = {typical:.0f} (m = {kd.numel()})")
"""),
    code("""
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
metrics
"""),
]

# =============================================================================================
LOC = [
    md("""
# 02 · Locating facts: causal tracing and the critical layers

**Learning goals**
- run causal tracing (ROME): corrupt the subject's embeddings with noise, restore one clean hidden
  state (block output, MLP output or attention output) at one token and layer, and see how much of
  the fact's probability comes back (the *indirect effect*);
- read the token × layer heatmaps and the averaged curves at the subject's last token;
- understand how the preset's critical-layer window for this model was chosen, from the recorded
  50-prompt evidence in `bluebook/assets/smollm2_tracing.json`.

**Runtime (CI profile, 2 CPU cores):** about 2–3 minutes on an idle machine (one heatmap prompt, two
curve prompts, two noise draws; longer when the cores are shared). The full profile traces 50 known facts with three draws.

**Paper section:** §3 "locate" step and the critical layers of §5 (the paper takes its windows from
causal tracing: GPT2-XL 13–17, GPT-J 3–8, Llama3-8B 4–8).
"""),
    params("""
model_name = "smollm2-135m"
heatmap_prompts = [["The capital of {} is", "France", "Paris"]]
n_curve_prompts = 2
n_samples = 2
torch_threads = 1
min_layer = 1
width = 5
seed = 0
device = "auto"
output_dir = "artifacts/02"
"""),
    code("""
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import bluebook
from bluebook import locate, runs
from bluebook.plots import locate as locate_plots, save

runs.seed_everything(seed)
dev = runs.resolve_device(device)
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
if torch_threads:
    torch.set_num_threads(torch_threads)   # many small batched products: one thread is often faster on a busy CPU
model, tok = bluebook.load_model(model_name, device=dev)
cfg = bluebook.preset_for(model, "memit")
n_layers = model.config.num_hidden_layers
recorded = json.loads(resources.files("bluebook").joinpath("assets/smollm2_tracing.json").read_text())
noise = locate.embedding_noise_scale(model)
print(f"noise scale = {noise:.3f} (3 × embedding std); preset critical layers {list(cfg.layers)}")
"""),
    md("""
## Heatmaps: one prompt at a time

Each panel shows p(target) with one module's clean output restored at one (token, layer) cell of
a corrupted run. Subject tokens are starred. Positions before the subject are never affected by the
noise, so they equal the corrupted probability.
"""),
    code("""
traces = []
for i, (tmpl, subj, tgt) in enumerate(heatmap_prompts):
    r = locate.trace_prompt(model, tok, tmpl, subj, tgt, n_samples=n_samples, noise=noise, seed=seed + i)
    traces.append(r)
    fig = locate_plots.trace_heatmap(r)
    save(fig, out, f"heatmap_{i}")
    print(f"{r.prompt!r}: clean {r.high:.3f}, corrupted {r.low:.3f}")
    assert r.high > r.low, "corrupting the subject must lower p(target)"
fig
"""),
    md("""
Restoring the **block output** (the whole residual stream) at the subject's last token recovers
the fact over many early and middle layers, and at the last token in the late layers: the
information is carried at the subject and later moved to the prediction position by attention.
The MLP and attention panels restore a single layer's contribution, so their effects are smaller.
"""),
    code("""
r0 = traces[0]
s_last = r0.subject_range[1]
block_ie = r0.indirect_effect("block")[s_last]
mid = slice(1, n_layers // 2)
print("block IE at the subject's last token, layers 1..:", np.round(block_ie[1:n_layers // 2], 3))
assert np.nanmean(block_ie[mid]) > 0.05 * (r0.high - r0.low)
"""),
    md("""
## Averaged curves at the subject's last token

ROME averages the indirect effects over known facts. Here the live run uses only a few CounterFact
prompts the model knows (top-1), and only the subject's last token (cheap); the recorded evidence
is the same computation on 50 known facts.
"""),
    code("""
known = locate.filter_known(model, tok, bluebook.load_counterfact(n=200), top_k=1, limit=n_curve_prompts)
live = locate.trace_many(model, tok, known, n_samples=n_samples, noise=noise, seed=seed + 100,
                         positions="subject_last")
rec = {k: np.asarray(v, dtype=float) for k, v in recorded["ie_subject_last"].items()}
fig = locate_plots.ie_curves({f"mlp (live, {live.n_prompts} prompts)": live.curves["mlp"],
                              f"mlp (recorded, {recorded['n_prompts']} prompts)": rec["mlp"],
                              f"attn (recorded)": rec["attn"]},
                             highlight=list(cfg.layers), title="MLP indirect effect at the subject's last token")
save(fig, out, "ie_curves_mlp")
fig2 = locate_plots.ie_curves({"block (recorded)": rec["block"], "block (live)": live.curves["block"]},
                              highlight=list(cfg.layers), title="block-output indirect effect at the subject's last token")
save(fig2, out, "ie_curves_block")
pd.DataFrame({"mlp live": live.curves["mlp"], "mlp recorded": rec["mlp"], "block recorded": rec["block"]}).T.round(3)
"""),
    md("""
## Choosing the critical layers

* The largest single MLP effect is at **layer 0** (recorded: `peak_mlp_layer = 0`). The first MLP
  of a transformer largely re-encodes the token it sits on (an extension of the embedding), so
  restoring it undoes part of the *noise* whatever the fact is. It is not where facts are
  recalled, and ROME/MEMIT never edit it.
* Looking past it (`min_layer = 1`), the 5-layer window with the largest summed MLP effect on the
  recorded curve is computed below with `locate.propose_critical_layers`.
* The preset uses **layers 4–8**: the window the search returns past layer 0, and the window the
  paper uses for Llama3-8B (the same architecture family), with the BLUE boundary layers 4 and 8.

**Where this differs from the paper.** On GPT2-XL/GPT-J the MLP curve has a clear bump in the
early-middle layers. On this 135M model the per-layer MLP effects are an order of magnitude
smaller than the block effect and almost flat, so the window is a weak choice among near-equals;
the CI run with a few prompts and two noise draws is noisier still and can put its peak elsewhere.
"""),
    code("""
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
"""),
    code("""
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
metrics
"""),
]

# =============================================================================================
EDIT = [
    md("""
# 03 · Closed-form edits: a rank-one edit at one layer, and MEMIT over the critical layers

**Learning goals**
- compute the target hidden state `v* = h + δ` at a layer (`optimize_targets`) and the residual
  `r = v* − h` it asks that layer to add;
- write a ROME-style rank-one update `Δ = r uᵀ / (uᵀ k)` with `u = C⁻¹ k / ‖C⁻¹ k‖`, apply it and
  see the fact change;
- re-derive MEMIT's closed form `Δ = R Kᵀ (λC + K Kᵀ)⁻¹` (the paper's `R K₁ᵀ (K₀K₀ᵀ + K₁K₁ᵀ)⁻¹`)
  from the normal equations and check it against `bluebook.solvers.memit_delta`, with the one-key
  case reducing to the rank-one update (Sherman–Morrison);
- run MEMIT over the critical layers with `bluebook.edit(..., "memit")` and compare the edited
  prompt, paraphrases and neighbours before and after.

**Runtime (CI profile, 2 CPU cores):** about 3 minutes (one target optimisation, shared by the
rank-one edit and MEMIT; layer statistics from the disk cache).

**Paper section:** §3 (locate-then-edit: the least-squares objective, its closed form and the
residual distribution `R^l = R^L / (L − l + 1)`), which BLUE revisits in §4.
"""),
    params("""
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
"""),
    code("""
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import bluebook
from bluebook import hooks, locate, metrics as bm, runs, solvers
from bluebook.keys import read_states
from bluebook.plots import edits as edit_plots, save

runs.seed_everything(seed)
dev = runs.resolve_device(device)
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
model, tok = bluebook.load_model(model_name, device=dev)
cfg = bluebook.preset_for(model, "memit")           # the model's preset (hparams=None below uses the same)
layers = list(cfg.layers)
L = layers[-1]
templates = bluebook.templates.context_templates(model, tok, fixed=cfg.context_templates)
req = bluebook.EditRequest(prompt, subject, target_new, target_true)
stats = bluebook.layer_stats(model, tok, layers, cfg.stats, progress=False)
new_id = locate.target_token_id(tok, req.text, target_new)
print(f"critical layers {layers}, λ = {cfg.lam:g}; rank-one layer L = {L}; edit: {req.text!r} -> {target_new!r}")
"""),
    md("""
## Measuring: probabilities on the edited prompt, paraphrases and neighbours

`bluebook.metrics.continuation_nll` scores a continuation after a prompt; for one-token targets
`exp(−NLL)` is its probability. On paraphrases we want the *new* object to win; on neighbours
(other subjects) the *true* object should stay.
"""),
    code("""
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
"""),
    md("""
## Step 1 — the target `v*` at layer L and the residual `r`

`optimize_targets` adds a free vector `δ` to block L's output at the subject's last token and
optimises it (Adam) so the model predicts the new object after every context template, with a KL
term keeping "{subject} is a" unchanged and a norm penalty (algorithms.md §1). `z = h + δ` is the
hidden state layer L *should* produce; the residual `r = z − h` is what the edited weights must add.
"""),
    code("""
tr = bluebook.optimize_targets(model, tok, [req], L, cfg.target, templates, progress=False)
st = read_states(model, tok, [req], key_layers=[L], hidden_layers=[L], templates=templates)
k = st.keys[L][:, 0].double()                      # template-averaged key at layer L  (m,)
h = st.hidden[L][:, 0].double()                    # current block-L output, bare prompt  (d,)
r = tr.z[0].double().to(h.device) - h              # residual  (d,)
torch.testing.assert_close(r, tr.delta[0].double().to(h.device), rtol=1e-4, atol=1e-4)
print(f"{tr.steps[0]} steps; p({target_new}) with δ added: {tr.final_prob[0]:.3f}; "
      f"‖δ‖ = {r.norm():.2f}, ‖h‖ = {h.norm():.2f}")
"""),
    code("""
from matplotlib.figure import Figure
fig = Figure(figsize=(6, 3))
ax = fig.subplots()
ax.plot(tr.loss[0], label="total loss")
ax.plot(tr.nll[0], label="target NLL")
ax.plot(tr.prob[0], label=f"p({target_new})")
ax.set_xlabel("step")
ax.legend()
ax.set_title(f"optimising v* at layer {L}")
fig.tight_layout()
save(fig, out, "target_optimisation")
fig
"""),
    md("""
## Step 2 — a rank-one edit at layer L (ROME-style)

We want `Ŵ = W + Δ` with `Δ k = r` (the key now produces value `W k + r`) while disturbing other
keys as little as possible *as measured by* `C`. Minimising `tr(Δ C Δᵀ)` subject to `Δ k = r`
(Lagrange multipliers) gives a rank-one update along `C⁻¹k`:

    u = C⁻¹k / ‖C⁻¹k‖,        Δ = r uᵀ / (uᵀ k)          (so Δ k = r exactly)

ROME puts this on the MLP output; adding `r` to the MLP output at the subject's last token is the
same as adding it to block L's output there, which is what `v*` was optimised for.
"""),
    code("""
C_L = stats[L].C.double().to(k.device)
Cik = torch.linalg.solve(C_L, k)
u = Cik / Cik.norm()
Delta_rank1 = torch.outer(r, u) / (u @ k)                       # (d, m)
torch.testing.assert_close(Delta_rank1 @ k, r)
assert torch.linalg.matrix_rank(Delta_rank1.float()) == 1
with hooks.patched_weights(model, {L: Delta_rank1.float()}):
    after_rank1 = measure()
    top1_rank1 = is_top1()
print(f"rank-one edit at layer {L}: p({target_new}) {before['p_new'][0]:.4f} -> {after_rank1['p_new'][0]:.3f}, "
      f"top-1: {top1_rank1}")
assert after_rank1["p_new"][0] > before["p_new"][0]
"""),
    md("""
## Step 3 — the least-squares objective and its closed form

MEMIT keeps the old key–value pairs `(K₀, M₀ = W K₀)` and adds new ones `(K₁, M₁)`:

    Ŵ = argmin ‖Ŵ K₀ − M₀‖² + ‖Ŵ K₁ − M₁‖²

Gradient = 0 gives the normal equations `Ŵ (K₀K₀ᵀ + K₁K₁ᵀ) = M₀K₀ᵀ + M₁K₁ᵀ`. Write `Ŵ = W + Δ`,
use `W K₀K₀ᵀ = M₀K₀ᵀ` and `R = M₁ − W K₁` (the residuals):

    Δ (K₀K₀ᵀ + K₁K₁ᵀ) = R K₁ᵀ    ⇒    Δ = R K₁ᵀ (K₀K₀ᵀ + K₁K₁ᵀ)⁻¹

In practice `K₀K₀ᵀ` is replaced by `λ C` (Wikipedia keys, weighted by λ). Below: these few lines
against `solvers.memit_delta`, and against `torch.linalg.lstsq` on the stacked system
`Δ [√λ Lc, K₁] ≈ [0, R]` with `C = Lc Lcᵀ` (the same objective written as one least-squares problem).
"""),
    code("""
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
"""),
    md("""
**One key: MEMIT's update is the rank-one update, shrunk.** By Sherman–Morrison,
`kᵀ(λC + kkᵀ)⁻¹ = kᵀC⁻¹ / (λ + kᵀC⁻¹k)`, so

    Δ_MEMIT = r (C⁻¹k)ᵀ / (λ + kᵀC⁻¹k) = s/(1+s) · Δ_rank-one,    s = kᵀC⁻¹k / λ

λ trades "write the new value" against "leave everything else alone": with `s ≫ 1` the key gets its
full residual, with `s ≪ 1` only a fraction. The table shows the factor for several λ.
"""),
    code("""
kCk = float(k @ Cik)
sm = torch.outer(r, Cik) / (cfg.lam + kCk)
torch.testing.assert_close(solvers.memit_delta(K1, R1, C_L, cfg.lam), sm, rtol=1e-6, atol=1e-9)
torch.testing.assert_close(sm, kCk / (cfg.lam + kCk) * Delta_rank1, rtol=1e-6, atol=1e-9)
shrink = pd.DataFrame({"λ": [1.0, 10.0, 100.0, 1000.0, cfg.lam],
                       "fraction of r written, s/(1+s)": [kCk / (x + kCk) for x in [1.0, 10.0, 100.0, 1000.0, cfg.lam]]})
print(f"kᵀC⁻¹k = {kCk:.0f}; preset λ = {cfg.lam:g}")
shrink
"""),
    md("""
## Step 4 — MEMIT over the critical layers

`bluebook.edit(model, tok, [req], "memit")` runs the MEMIT loop (algorithms.md §4) with the model's
preset (`hparams=None`): the target is optimised at the last critical layer L (we pass the one
computed above, the same computation), then for each layer `l` in ascending order it reads the keys
on the partially edited model, re-measures the residual at L, gives layer `l` the share
`R / (N_L − i)` (the **residual distribution** that BLUE questions), solves the closed form and
applies it before moving on. The weights are unchanged on return; `with result:` applies the edit
inside the block.
"""),
    code("""
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
"""),
    md("""
The `z_error` column is the residual still left at layer L when layer `l` is solved: the first
layer gets only `1/N_L` of a large residual; later layers get shares of what is left. BLUE
(notebook 04 onwards) instead computes the residual *directly* at the first and last critical layers.
"""),
    code("""
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
save(fig, out, "before_after")
save(edit_plots.probability_table(table.round(4)), out, "probability_table")
table.round(4)
"""),
    code("""
assert after["p_new"][0] > before["p_new"][0], "MEMIT should raise p(target_new) on the edited prompt"
assert top1_after, f"{target_new!r} should be the top-1 next token after the MEMIT edit"
n_para = len(paraphrases)
para_before = float(np.mean(before["p_new"][1:1 + n_para]))
para_after = float(np.mean(after["p_new"][1:1 + n_para]))
neigh_before = float(np.mean(before["p_true"][1 + n_para:]))
neigh_after = float(np.mean(after["p_true"][1 + n_para:]))
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
}
runs.write_metrics(out, metrics)
metrics
"""),
]

FULL = {
    "00_tour": {"n_prompts_table": 12, "n_known_check": 500},
    "01_key_value_memory": {"n_wiki_texts": 200},
    "02_locating": {"n_curve_prompts": 50, "n_samples": 3,
                    "heatmap_prompts": [["The capital of {} is", "France", "Paris"],
                                        ["The mother tongue of {} is", "Danielle Darrieux", "French"]],
                    "torch_threads": 0},
    "03_closed_form_edits": {},
}


def write(stem, cells):
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.validate(nb)
    nbformat.write(nb, NB / f"{stem}.ipynb")


def main():
    import yaml
    (NB / "params" / "full").mkdir(parents=True, exist_ok=True)
    for stem, cells in [("00_tour", TOUR), ("01_key_value_memory", KV), ("02_locating", LOC),
                        ("03_closed_form_edits", EDIT)]:
        write(stem, cells)
        head = f"# Full-profile parameters for notebooks/{stem}.ipynb (papermill -f).\n"
        body = yaml.safe_dump(FULL[stem], sort_keys=False, default_flow_style=None) if FULL[stem] else "{}\n"
        (NB / "params" / "full" / f"{stem}.yaml").write_text(head + body)
        print("wrote", NB / f"{stem}.ipynb")


if __name__ == "__main__":
    main()
