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
# # 00 · A tour of the embedded model and the edit datasets
#
# **Learning goals**
# - load the embedded SmolLM2-135M-Instruct model (30 blocks, d = 576, MLP width m = 1536) with one call;
# - see what it "knows": its top next tokens on factual prompts from CounterFact;
# - read one CounterFact and one zsRE record as `bluebook.EditRequest`s (prompt template, subject,
#   new and true target, paraphrases, neighbourhood prompts);
# - edit a fact of your own with MEMIT and MEMIT-BLUE and read the model's answers before and after.
#
# **Runtime (CI profile, 2 CPU cores):** about 1 minute.
#
# **Paper section:** §2 / §5.1 (the setting and the datasets, CounterFact and zsRE). The paper edits
# GPT2-XL, GPT-J and Llama3-8B; everything here runs on a 135M model so it fits a laptop CPU.

# %% tags=["parameters"]
model_name = "smollm2-135m"
n_prompts_table = 6
n_known_check = 40
top_k = 5
fact_prompt = "The Eiffel Tower is located in the city of"   # your fact: a prompt containing the subject,
fact_subject = "The Eiffel Tower"                            # the subject,
fact_new = "Rome"                                            # the new answer
fact_true = "Paris"                                          # and the old one ("" if none)
interactive = True          # show a form to type facts into (needs a browser; the batch runs turn it off)
seed = 0
device = "auto"
output_dir = "artifacts/00"

# %%
from pathlib import Path

import pandas as pd
import torch

import bluebook
from bluebook import locate, runs
from bluebook.experiments.playground import fact_form, try_fact
from bluebook.model.device import resolve_device
from bluebook.plots import edits as edit_plots
from bluebook.plots import show

runs.seed_everything(seed)
dev = resolve_device(device)
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
model, tok = bluebook.load_model(model_name, device=dev, progress=False)
spec = bluebook.spec_for(model)
cfg = bluebook.preset_for(model, "memit")

# %% [markdown]
# ## The model
#
# `load_model` returns a Hugging Face causal LM in fp32, in eval mode, with gradients off, and its
# tokenizer (right padding). `spec_for(model)` knows where the pieces the editing methods touch live:
# the block outputs (the residual stream `h^l`) and the MLP output projection whose weight `W^l`
# (`d × m`) every locate-then-edit method rewrites.

# %%
W = bluebook.model.specs.math_weight(model, cfg.layers[0])
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


# %% [markdown]
# ## What does it know?
#
# The top next tokens after a few factual prompts. `topk` below is just a softmax over the last
# position's logits.

# %%
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

# %%
cf = bluebook.load_counterfact(n=max(n_prompts_table, n_known_check))
rows = []
for r in cf[:n_prompts_table]:
    top = topk(r.text)
    rows.append({"prompt": r.text, "true": r.target_true, "top": top})
table = pd.DataFrame([{"prompt": r["prompt"], "true target": r["true"],
                       **{f"#{i + 1}": f"{t!r} {p:.2f}" for i, (t, p) in enumerate(r["top"])}} for r in rows])
fig = edit_plots.topk_table(rows, title="top next tokens on CounterFact prompts")
show(fig, out, "topk_counterfact")
table

# %% [markdown]
# A small model knows far fewer facts than the paper's 6–8B models. `locate.known_ranks` gives the
# rank of the true target's first token among all next tokens (0 = top-1); ROME calls the prompts
# with rank 0 "known facts" and traces only those (notebook 02).

# %%
ranks = locate.known_ranks(model, tok, cf[:n_known_check])
frac_known = sum(r == 0 for r in ranks) / len(ranks)
frac_top10 = sum(r < 10 for r in ranks) / len(ranks)
print(f"true target is top-1 on {frac_known:.0%} and top-10 on {frac_top10:.0%} of the first {len(ranks)} prompts")
assert 0.0 < frac_known < 1.0 and frac_top10 >= frac_known

# %% [markdown]
# ## One CounterFact record and one zsRE record
#
# A CounterFact case asks to rewrite `(subject, relation, true object)` to a *counterfactual* new
# object. Efficacy is measured on the rewrite prompt, generalisation on paraphrases (which prepend
# unrelated text), specificity on neighbourhood prompts about *other* subjects with the same true
# object. zsRE cases are questions; their `target_true` is a dummy and specificity uses one unrelated
# question (`neighborhood_answer`).

# %%
zs = bluebook.load_zsre(n=1)
def show_request(req):
    d = req.to_dict()
    keep = ["dataset", "case_id", "prompt", "subject", "target_new", "target_true", "paraphrase_prompts",
            "neighborhood_prompts", "neighborhood_answer"]
    return pd.Series({k: (list(d[k])[:3] if isinstance(d[k], (list, tuple)) else d[k]) for k in keep})

pd.concat({"CounterFact": show_request(cf[0]), "zsRE": show_request(zs[0])}, axis=1)

# %% [markdown]
# ## Edit a fact yourself
#
# `try_fact` takes a prompt, its subject and a new answer, edits the model with each method (here
# MEMIT and MEMIT-BLUE, with the model's preset), and reads the model while the edit is applied:
# greedy text after the prompt, after a paraphrase (the prompt behind an unrelated sentence) and
# after an unrelated prompt, and the probability of the whole new and old answer after the prompt.
# Afterwards the weights are checked to be back bit for bit. Change `fact_prompt`, `fact_subject`,
# `fact_new` and `fact_true` in the parameters cell, or use the form below in JupyterLab.

# %%
fact = try_fact(model, tok, fact_prompt, fact_subject, fact_new, fact_true or None)
fact.texts

# %%
fact.probs

# %%
for m, s in fact.seconds.items():
    print(f"{m}: p(new) {fact.probs.loc['unedited', 'p(new)']:.3f} -> {fact.probs.loc[m, 'p(new)']:.3f}, "
          f"edit {s:.0f} s")

# %% [markdown]
# The form runs the same call on whatever you type (a browser is needed to see it; the batch runs of
# `make run` turn it off). Each press edits the unedited model afresh and undoes the edit afterwards.

# %%
fact_form(model, tok) if interactive else None

# %%
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
    "fact": {"prompt": fact_prompt, "new": fact_new, "true": fact_true,
             "p_new": fact.probs["p(new)"].to_dict(),
             "p_true": fact.probs["p(true)"].to_dict() if "p(true)" in fact.probs else None,
             "texts": fact.texts.drop(columns="text").to_dict(), "edit_seconds": fact.seconds},
}
runs.write_metrics(out, metrics)
