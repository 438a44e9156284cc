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
# # 11 · Long-form editing: a paragraph as the new fact
#
# **The claim.** The paper reports that BLUE "remains effective in long-text model editing". That
# setting comes from the long-form editing literature (AnyEdit, UnKE). One edit is made at a time.
# The new knowledge is a paragraph, not a word. The edited model's greedy answer is scored by its
# text overlap with that paragraph.
#
# **You will learn**
# 1. why one vector at the subject's last token cannot carry a paragraph, and how the windowed,
#    autoregressive scheme writes it instead (one key token and one $v^*$ per window of tokens);
# 2. that the rest of the edit stays the same loop: keys, residual rule (distributed or BLUE) and
#    closed form, with one column per window;
# 3. the metrics long-form work uses: ROUGE-1/2/L, BLEU, token F1 and an embedding similarity, on
#    the edit prompt and on a paraphrased question, plus locality on unrelated prompts;
# 4. how to read a claim of *no loss* ("remains effective"): BLUE agrees when it is not worse than
#    its base beyond a small margin.
#
# **Where the numbers come from.** None of the long-form benchmarks ships offline. The set used
# here (`bluebook.load_longform()`, 240 records) is built from Wikipedia lead sections of the
# offline corpus that the layer statistics never read. In each record, a subject receives another
# article's description from the same topic (`bluebook/assets/SOURCES.md`). §2 runs one live edit
# on the embedded SmolLM2-135M, on record 2 (`demo_record`). It demonstrates the edit and never
# decides a claim. §3 compares the methods live in the full profile (50 records); the CI profile
# skips it. §5 reads the recorded run under `results/longform/`. Its `invocations.jsonl` files hold
# the command, commit, machine and wall time. The recorded run leaves out record 0, on which the
# preset's long-form settings were tuned.
#
# **Runtime (CI profile, 2 CPU cores):** about 2 minutes (one MEMIT-BLUE edit of a 58-token target).

# %% tags=["parameters"]
model_name = "smollm2-135m"
methods = ["memit", "memit_blue"]     # the live comparison (the recorded run adds AlphaEdit and its BLUE)
n_live = 0                            # records compared live, one edit at a time (CI: 0, the §2 edit only)
live_start = 1                        # the first record of the live comparison (record 0 tuned the preset)
demo_record = 2                       # the record of the one edit shown in §2 (why this one: end of §2)
window = None                         # tokens per window; None: the preset's long-form setting (16)
target_steps = None                   # v* steps per window; None: the preset's long-form setting (50)
max_new_tokens = None                 # greedy budget; None: the target's own length in tokens
num_threads = 1                       # torch threads; 1 as in the recorded run (0: torch's default), see §2
results_dir = "../results/longform"
recorded_run = "longform_wiki"
budget_run = "longform_wiki_equal_total"   # the same comparison at an equal total v* budget (§5b)
seed = 0
device = "auto"
output_dir = "artifacts/11"

# %%
from pathlib import Path

import pandas as pd
import torch

import bluebook
from bluebook.core.config import long_form_config
from bluebook.core.longform import target_windows
from bluebook.editor.loop import prepare_stats, resolve_config
from bluebook.experiments.longform import longform_claims, read_run, run_longform, summarize_longform
from bluebook.metrics.claims import claims_frame, decide
from bluebook.metrics.longform import greedy_continuations, text_scores
from bluebook.plots import longform as lf_plots
from bluebook.plots import show

bluebook.runs.seed_everything(seed)
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
lm, tok = bluebook.load_model(model_name, device=device, progress=False)
hp = {"target": {}}
if window is not None:
    hp["target"]["window"] = int(window)
if target_steps is not None:
    hp["target"]["steps"] = int(target_steps)
hp = hp if hp["target"] else None
shipped = bluebook.load_longform()
req = shipped[int(demo_record)]
records = shipped[live_start:live_start + n_live]
long_cfg = long_form_config(resolve_config(lm, "memit_blue", hp))
window = long_cfg.target.window
for m in sorted({"memit_blue", *methods}):     # layer statistics on all threads, before the edits are pinned
    prepare_stats(lm, tok, m, hp)
if num_threads:
    torch.set_num_threads(int(num_threads))
print(f"{len(shipped)} records shipped; live comparison: {len(records)} records")
print(f"long-form settings (preset): window {window} tokens, {long_cfg.target.steps} v* steps, "
      f"clamp {long_cfg.target.clamp_norm_factor}, weight decay {long_cfg.target.weight_decay}, λ {long_cfg.lam}")
print("prompt:  ", req.text)
print("target:  ", req.target_new)
print("question:", req.paraphrase_prompts[0])

# %% [markdown]
# ## 1 · A paragraph, cut into windows
#
# The target has far more tokens than a CounterFact object. The scheme cuts it into windows of
# `window` tokens. Window $k$ is written at its *key token*, the token just before it: the
# prompt's last token for the first window, then the target's own tokens. Each window gets a
# $v^*_k = h_k + \delta_k$, optimised so that the model continues with that window, with the
# earlier windows' $\delta$s already in place. The objective is otherwise the short-target one,
# without context templates (they would move every key token) and without the KL term (it
# protects the subject's next-token distribution, which a new description changes on purpose).

# %%
ws = target_windows(tok, req, window)
pd.DataFrame([{"window": w.index, "key token": repr(tok.decode([w.ids[w.at]])), "key position": w.at,
               "tokens": len(w.labels), "text": tok.decode(list(w.labels))[:70] + "…"} for w in ws])

# %% [markdown]
# ## 2 · One edit, before and after
#
# MEMIT-BLUE on record `demo_record`: $v^*$ for every window at the first critical layer, keys at the
# key tokens, the closed form, then again at the last critical layer with the residual computed
# directly. The weights change inside the `with` block only.

# %%
budget = max_new_tokens or len(tok(req.new_text, add_special_tokens=False)["input_ids"])
prompts = [req.text, req.paraphrase_prompts[0]]
before = greedy_continuations(lm, tok, prompts, budget)
res = bluebook.edit(lm, tok, [req], "memit_blue", hparams=hp, progress=False)
with res:
    after = greedy_continuations(lm, tok, prompts, budget)
assert res.changed_layers() == list(res.layers) and len(res.layers) == 2
table = pd.DataFrame({
    "unedited": [text_scores(t, req.target_new)["rougeL"] for t in before],
    "memit_blue": [text_scores(t, req.target_new)["rougeL"] for t in after]},
    index=["edit prompt", "paraphrased question"])
print(f"updated layers {res.layers}; {len(ws)} windows, v* steps per window "
      f"{ {l: t.steps for l, t in res.targets.items()} }")
print("\nunedited answer:\n ", before[0][:400])
print("\nedited answer:\n ", after[0][:400])
print("\nedited answer to the question:\n ", after[1][:400])
table.style.format("{:.3f}").set_caption("ROUGE-L against the target")

# %% [markdown]
# The edited model now answers the edit prompt with most of the new paragraph (ROUGE-L of at least
# 0.5; unedited, the model says something else). The paraphrased question is another matter: its
# key tokens are different tokens, so the edit reaches them only as far as their keys resemble the
# edited ones.
#
# **One edit is fragile, and this one was chosen.** Greedy decoding follows the argmax, so one
# token off the target sends every later window's key token elsewhere. The $v^*$ optimisations
# differ in the last bits with the number of threads, the CPU and the library versions, and an edit
# whose last windows end near the step cap can fall either way. Record 0, on which the preset was
# tuned, is such an edit: MEMIT-BLUE reached ROUGE-L 0.65 on it when the preset was chosen, and
# 0.30 in a later sitting with the same code and one thread (it left the target at the fourth
# word); which difference of machine or libraries moved it was not found. Record 2 is shown because its edit is far from that edge. It
# reproduced its target word for word (ROUGE-L 1.0) in the recorded run and again here with one
# and with two torch threads. How often one edit works is a rate, and §5 measures it: the
# `reproduced` column there is the share of records whose edited answer reaches ROUGE-L 0.5.

# %%
assert table.loc["edit prompt", "memit_blue"] >= 0.5 > table.loc["edit prompt", "unedited"], \
    "the edited answer does not reproduce most of the target"

# %% [markdown]
# ## 3 · The live comparison
#
# Each record is edited on its own with each method, from the unedited model. The weights are
# restored bit-exactly between edits. `method="none"` is the unedited model. Scores are means
# with 95 % bootstrap intervals. A few records show the computation; they cannot carry the claim.
# The CI profile compares none live (`n_live = 0`): each long edit costs about a minute per method
# on two CPU cores, so the comparison is the recorded run of §5.

# %%
live_rows = run_longform(lm, tok, records, methods, hparams=hp, max_new_tokens=max_new_tokens,
                         progress=False) if records else []
live = summarize_longform(live_rows) if live_rows else None
if live:
    show(lf_plots.score_bars(live, title=f"live, n={live['n_records']} records (small sample)"), out, "scores_live")
    show(lf_plots.locality_bars(live, title="live locality (unrelated prompts)"), out, "locality_live")
else:
    print("live comparison: none in this profile (n_live = 0); see §5 for the recorded run")

# %% [markdown]
# ## 4 · What it costs
#
# Every window is its own $v^*$ optimisation, so a long target costs about `windows × steps`
# forward and backward passes over at most `window` tokens. The text before a window's key token
# runs once into a key/value cache. BLUE optimises twice, once at each of its two layers. MEMIT
# optimises once, at its last layer, and distributes the residual over five layers.

# %%
cost_rows = [{"method": "memit_blue (§2)", "case_id": req.case_id, "windows": len(ws),
              "v* steps (mean per window)": {l: round(sum(t.steps) / len(t.steps), 1) for l, t in res.targets.items()},
              "edit seconds": round(sum(res.diagnostics["timings"].values()), 1)}]
cost_rows += [{"method": r["method"], "case_id": r["case_id"], "windows": r["windows"],
               "v* steps (mean per window)": {l: round(sum(s) / len(s), 1) for l, s in r["target_steps"].items()},
               "edit seconds": round(r["edit_seconds"], 1)} for r in live_rows if r["method"] != "none"]
pd.DataFrame(cost_rows)

# %% [markdown]
# ## 5 · The recorded run
#
# `python -m bluebook longform --n N --methods memit,memit_blue,alphaedit,alphaedit_blue --out
# results/longform/longform_wiki` makes the same comparison on the first N records, resumably,
# one row per record and method. This section reads its committed rows. Besides the mean scores,
# the table gives `prompt.reproduced`: the share of records whose edited answer to the edit prompt
# reaches ROUGE-L 0.5 against the target, with its Wilson interval. It says how typical the edit of
# §2 is.

# %%
folder = Path(results_dir) / recorded_run
rec_rows, provenance = read_run(folder)
recorded_summary, recorded_claims = None, {}
if rec_rows:
    recorded_summary = summarize_longform(rec_rows)
    recorded_claims = longform_claims(rec_rows, evidence="recorded")
    show(lf_plots.score_bars(recorded_summary, title=f"recorded, n={recorded_summary['n_records']} records"),
         out, "scores_recorded")
    show(lf_plots.locality_bars(recorded_summary, title="recorded locality"), out, "locality_recorded")
    rows = {m: {k: f"{d[k]['value']:.3f} [{d[k]['low']:.3f}, {d[k]['high']:.3f}]"
                for k in ("prompt.rougeL", "prompt.reproduced", "paraphrase.rougeL", "prompt.bleu",
                          "prompt.similarity")}
            for m, d in recorded_summary["methods"].items()}
    for e in provenance:
        if e.get("event") == "start":
            print("recorded with:", e["command"], "| commit", e["commit"], "|", e["started"])
        elif e.get("event") == "end":
            print(f"   ended {e['ended']} after {e['wall_s'] / 3600:.2f} h ({e['status']})")
    display_table = pd.DataFrame(rows).T
else:
    print(f"recorded tier: nothing recorded under {folder}")
    display_table = None
display_table

# %% [markdown]
# ## 5b · The same comparison at an equal $v^*$ budget
#
# The run of §5 gives every $v^*$ optimisation the same cap, so BLUE, which optimises twice per
# window, may spend twice its base's steps. This run removes that advantage:
# `python -m bluebook longform --start 1 --methods memit,memit_blue --budget equal_total
# --budget-steps 25` caps each of BLUE's two optimisations at 25 steps per window and the base's
# single one at 50, the same total. Each claim's note gives the caps from the rows and the steps
# actually used. Its claims carry the suffix `_equal_total`.

# %%
budget_folder = Path(results_dir) / budget_run
eq_rows, eq_provenance = read_run(budget_folder)
budget_summary, budget_claims = None, {}
if eq_rows:
    budget_summary = summarize_longform(eq_rows)
    budget_claims = {f"{k}_equal_total": c for k, c in longform_claims(eq_rows, evidence="recorded").items()}
    show(lf_plots.score_bars(budget_summary, title=f"recorded, equal total v* budget, "
                                                   f"n={budget_summary['n_records']} records"), out, "scores_equal_total")
    for e in eq_provenance:
        if e.get("event") == "start":
            print("recorded with:", e["command"], "| commit", e["commit"], "|", e["started"])
    budget_table = claims_frame(budget_claims)[["ours", "low", "high", "n", "verdict", "note"]]
else:
    print(f"equal-budget run: nothing recorded under {budget_folder}")
    budget_table = None
budget_table

# %% [markdown]
# **Reading the locality panel.** Every record and every unrelated prompt uses the template
# "Tell me about {}.". So the first window's key token is always the same "." after a different
# subject, and an edit written there can reach every prompt of that form. The unedited instruct
# model often answers such a bare prompt with nothing: it stops at once. A change from that empty
# answer to any text scores ROUGE-L 0, which correctly counts as fully changed.

# %% [markdown]
# ## 6 · Verdict
#
# For each base method and its BLUE variant, the claim is that BLUE loses no more than 0.02
# ROUGE-L on the same records (paired bootstrap of BLUE − base). *Agrees*: the whole interval is
# above −0.02. *Disagrees*: the whole interval is below it. *Inconclusive*: anything else. Where
# the live sample cannot decide and the recorded run can, the verdict comes from the recorded run
# and its note says so.
#
# **Budgets.** BLUE optimises $v^*$ twice, and each of its optimisations has the same cap as the
# base method's single one (50 steps per window), so BLUE spends more on its targets. Each note
# gives the caps, the steps used per window and the base's final window probability. A base whose
# $v^*$ ends near probability 1 is limited by how its edit realises the target, not by the budget.
# The `_equal_total` claims of §5b are the comparison at the same total budget: where the two
# disagree, the budget, not the residual rule, made the difference.

# %%
live_claims = longform_claims(live_rows, evidence="live") if live_rows else {}
claims = {k: decide(live_claims.get(k), recorded_claims.get(k)) for k in {**recorded_claims, **live_claims}}
claims.update(budget_claims)
claims_frame(claims)[["ours", "low", "high", "n", "verdict", "evidence"]]

# %%
bluebook.runs.write_metrics(out, {
    "model": model_name, "window": window, "n_live": len(records), "methods": methods,
    "first_edit": {"case_id": req.case_id, "layers": list(res.layers), "windows": len(ws),
                   "rougeL": table.to_dict()},
    "live": live, "recorded": recorded_summary, "recorded_rows": len(rec_rows),
    "equal_total": budget_summary, "equal_total_rows": len(eq_rows),
    "claims": claims,
})
