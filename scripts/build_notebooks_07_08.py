"""Write notebooks/07_replication.ipynb and notebooks/08_general_ability.ipynb (no outputs).

Run from the repository root: ``python scripts/build_notebooks_07_08.py``.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
NB = ROOT / "notebooks"


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str, tags=None):
    c = new_code_cell(text.strip("\n"))
    c.outputs, c.execution_count = [], None
    if tags:
        c.metadata["tags"] = list(tags)
    return c


def write(name: str, cells) -> Path:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    path = NB / name
    nbformat.validate(nb)
    path.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")
    return path


# =============================================================================================
# 07 replication
# =============================================================================================

NB07 = [
    md(r"""
# 07 · Replication tables: sequential batch editing on CounterFact and zsRE

**Paper section:** §5 main results (sequential batch editing tables; algorithms.md §9).

**Learning goals**
- run the reference protocol: edit `n` records in consecutive batches, **permanently**, then evaluate
  *every* record on the final model (not each batch right after its edit, which inflates numbers);
- compare each locate-then-edit method (MEMIT, AlphaEdit, RECT, PRUNE) with its BLUE variant on the
  same records, with the same batches, starting from the same unedited weights;
- read the results next to the paper's Llama3-8B / GPT-J numbers, and see what does and does not
  transfer to a 135M-parameter model.

**Runtime:** CI defaults (6 records in 2 batches of 3, all 8 variants, both datasets, 5 target
steps) took 18 minutes on 2 CPU cores shared with other jobs (load ≈ 9, `num_threads=1`); about
50 s per method and dataset there, so expect a few minutes on an idle machine or any GPU. The full profile (`params/full/07_replication.yaml`:
2,000 records in batches of 100 with generation) is a GPU job of several hours; it is resumable,
so rerunning the notebook with the same `output_dir` continues where it stopped.
"""),
    code(r"""
model = "smollm2-135m"
datasets = ["counterfact", "zsre"]
methods = ["memit", "memit_blue", "alphaedit", "alphaedit_blue", "rect", "rect_blue", "prune", "prune_blue"]
n_edits = 6
batch_size = 3
target_steps = 5
generation = False
num_threads = 0
resume = True
seed = 0
device = "auto"
output_dir = "artifacts/07"
""", tags=["parameters"]),
    code(r"""
import math
import time
from pathlib import Path

import torch

import bluebook
from bluebook import replicate as rp
from bluebook import runs
from bluebook.plots import replication as rplots, save

runs.seed_everything(seed)
if num_threads:                      # 0: torch's default; 1 is often fastest on a busy shared CPU
    torch.set_num_threads(int(num_threads))
dev = runs.resolve_device(device)
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
# None keeps the model's preset; a number shortens the v* optimisation (CI only)
hparams = None if target_steps is None else {"target": {"steps": int(target_steps)}}
lm, tok = bluebook.load_model(model, device=dev)
print(f"{model} on {dev}; {n_edits} records per dataset in batches of {batch_size}; hparams overrides: {hparams}")
"""),
    md(r"""
## The protocol in one call

`bluebook.replicate.replicate` does, for each method: restore the unedited projection weights
(exactly: the original of every edited layer is kept on the CPU), split the records into batches,
call `bluebook.edit(..., state=state, apply=True)` batch after batch with **one**
`SequentialState` per method (AlphaEdit and MEMIT-seq carry `K_p K_pᵀ` in it), and evaluate all
records at the end. It also evaluates the unedited model once (the `unedited` row).

After every batch it writes a checkpoint (edited layers' weights, the sequential state, a progress
file) under `output_dir/runs/<dataset>/<method>/`. A rerun with the same settings skips finished
methods and resumes unfinished ones; a rerun with *different* settings into the same folder stops
with `CheckpointMismatch` instead of silently mixing runs.
"""),
    code(r"""
results = {}
t_start = time.perf_counter()
for ds in datasets:
    t0 = time.perf_counter()
    results[ds] = rp.replicate((lm, tok), ds, methods=methods, n=n_edits, batch=batch_size,
                               out=out / "runs" / ds, hparams=hparams, device=dev,
                               generation=bool(generation and ds == "counterfact"), resume=resume,
                               progress=False, seed=seed, model_name=model)
    print(f"== {ds}: {time.perf_counter() - t0:.0f} s")
    print(rp.results_table(results[ds]))
runtime_s = time.perf_counter() - t_start
"""),
    md(r"""
## Beside the paper's numbers

The paper edits 2,000 records in batches of 100 on 6–8B models; here a 135M model gets a handful
of records. The reference rows (algorithms.md §9.4) are printed for orientation only: the *pattern*
to look for is "BLUE ≥ base" on each pair, not the absolute values. The paper's tables for RECT and
PRUNE are not in our notes, so those rows have no reference.
"""),
    code(r"""
PAPER = {  # BLUE paper, sequential editing, 2,000 records in batches of 100 (Eff, Gen, Spe)
    "counterfact": {"source": "Llama3-8B",
                    "memit": (65.65, 64.65, 51.56), "alphaedit": (98.90, 94.22, 67.88),
                    "memit_blue": (99.57, 94.13, 83.77), "alphaedit_blue": (99.93, 97.25, 75.24)},
    "zsre": {"source": "Llama3-8B",
             "memit": (34.62, 31.28, 18.49), "alphaedit": (94.47, 91.13, 32.55),
             "memit_blue": (95.94, 90.98, 32.41), "alphaedit_blue": (95.77, 91.73, 31.96)},
}
GPTJ_CF = {"memit": (98.55, 95.50, 63.64), "alphaedit": (99.75, 96.38, 75.48),
           "memit_blue": (99.70, 96.90, 74.61), "alphaedit_blue": (99.77, 97.13, 75.23)}
KEYS = ("efficacy", "generalization", "specificity")


def fmt(v):
    return "  n/a" if v is None else f"{v:6.2f}"


for ds in datasets:
    rows = results[ds]["methods"]
    print(f"\n{ds}: ours ({model}, n={n_edits}, batch={batch_size})  |  paper ({PAPER[ds]['source']})"
          + ("  |  paper (GPT-J)" if ds == "counterfact" else ""))
    print(f"{'method':16s}" + "".join(f"{k[:3]:>8s}" for k in KEYS) + "  |" + "".join(f"{k[:3]:>8s}" for k in KEYS))
    for m in ["unedited"] + [m for m in rp.PAPER_ORDER if m in rows]:
        ours = "".join(f"{fmt(rows[m]['summary'][k]):>8s}" for k in KEYS)
        ref = PAPER[ds].get(m)
        line = f"{m:16s}{ours}  |" + ("".join(f"{v:8.2f}" for v in ref) if ref else "       —" * 3)
        if ds == "counterfact" and m in GPTJ_CF:
            line += "  |" + "".join(f"{v:8.2f}" for v in GPTJ_CF[m])
        print(line)
"""),
    md(r"""
## Figures

Left to right: Efficacy, Generalization and Specificity per method, the base method in grey and its
BLUE variant in blue; the dashed line is the unedited model. The heatmap is the same table.
"""),
    code(r"""
figs = {}
for ds in datasets:
    figs[f"bars_{ds}"] = rplots.method_bars(results[ds], title=f"{ds}: sequential editing, n={n_edits}")
    figs[f"heatmap_{ds}"] = rplots.results_heatmap(results[ds], title=ds)
for name, fig in figs.items():
    save(fig, output_dir, name)
figs[f"bars_{datasets[0]}"]
"""),
    md(r"""
## Checks

What must hold for any settings: every number is finite and within [0, 100], and every edited
model is at least as good as the unedited one on the *edited* prompts (Efficacy). The second check
holds on the CI settings for all 8 variants on both datasets (unedited CounterFact efficacy is the
fraction of prompts where the model already prefers the new object, and zsRE's is the token
accuracy of the unedited model — both low). We do **not** assert that BLUE beats its base method:
with 6 records and 2 batches the sequential error the paper analyses has barely accumulated, so the
difference can go either way; the table above reports it as measured.
"""),
    code(r"""
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
"""),
    md(r"""
## Outputs

`results.md` in `output_dir` collects both tables (each dataset's run folder also has its own
`results.{json,csv,md}` and per-case JSON files); `metrics.json` holds, for each dataset and
method, Efficacy / Generalization / Specificity, with each BLUE variant next to its base method.
"""),
    code(r"""
parts = [f"# Replication tables ({model}, {n_edits} records, batches of {batch_size})", ""]
for ds in datasets:
    parts += [f"## {ds}", "", rp.results_table(results[ds])]
runs.atomic_write_text(out / "results.md", "\n".join(parts))

metrics = {"model": model, "n_edits": n_edits, "batch_size": batch_size, "target_steps": target_steps,
           "runtime_s": round(runtime_s, 1), "datasets": list(datasets)}
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
"""),
]

# =============================================================================================
# 08 general ability
# =============================================================================================

NB08 = [
    md(r"""
# 08 · General ability after sequential editing: perplexity, known facts, representation shift

**Paper section:** §5 "general capability" and the hidden-state shift analysis (algorithms.md §9.1
items 4–5). The paper runs GLUE-style tasks and plots how far the last-critical-layer states of
*unrelated* subjects move; it reports that BLUE keeps the model closer to the original.

**Learning goals**
- measure side effects without network access: perplexity on held-out Wikipedia lead sections (never
  used for the layer statistics), accuracy on known facts of records that were *not* edited, and the
  shift of unrelated subjects' hidden states at the last critical layer;
- compare every method with its BLUE variant after the same sequential edits;
- tell a robust property (perplexity stays finite and close to the unedited value for a few edits)
  from a claim that needs the paper's scale (BLUE preserves more).

**Runtime:** CI defaults (6 edits in 2 batches of 3 for each of the 8 variants, 32 held-out texts of ≤128
tokens, 64 unrelated records) took 8.5 minutes on 2 CPU cores shared with other jobs
(`num_threads=1`); expect a few minutes on an idle machine.
"""),
    code(r"""
model = "smollm2-135m"
methods = ["memit", "memit_blue", "alphaedit", "alphaedit_blue", "rect", "rect_blue", "prune", "prune_blue"]
n_edits = 6
batch_size = 3
target_steps = 5
num_threads = 0
n_heldout = 32
ppl_max_len = 128
n_unrelated = 64
unrelated_offset = 1000
seed = 0
device = "auto"
output_dir = "artifacts/08"
""", tags=["parameters"]),
    code(r"""
import math
import time
from pathlib import Path

import numpy as np
import torch

import bluebook
from bluebook import ability, runs
from bluebook.metrics import evaluate_counterfact, summarize
from bluebook.plots import replication as rplots, save
from bluebook.specs import proj_weight

runs.seed_everything(seed)
if num_threads:                      # 0: torch's default; 1 is often fastest on a busy shared CPU
    torch.set_num_threads(int(num_threads))
dev = runs.resolve_device(device)
Path(output_dir).mkdir(parents=True, exist_ok=True)
hparams = None if target_steps is None else {"target": {"steps": int(target_steps)}}
lm, tok = bluebook.load_model(model, device=dev)
cfg = bluebook.preset_for(lm, "memit")
last_layer = max(cfg.layers)                                # the last critical layer
edits = bluebook.load_counterfact(n=n_edits)
unrelated = bluebook.load_counterfact(n=n_unrelated, offset=unrelated_offset)
assert not {r.case_id for r in edits} & {r.case_id for r in unrelated}
texts = ability.heldout_texts(n_heldout, seed=seed)
print(f"critical layers {list(cfg.layers)}, last {last_layer}; {len(texts)} held-out texts; "
      f"{len(unrelated)} unrelated records (case_id {unrelated[0].case_id}..{unrelated[-1].case_id})")
"""),
    md(r"""
## The unedited model

Three numbers describe the model before any edit. Perplexity is `exp` of the mean token NLL over
the held-out texts (token-weighted). Known-fact accuracy is the fraction of unrelated CounterFact
prompts whose greedy next token is the first token of the true object — a small model knows only
some of them, which is fine: we watch how the fraction *changes*. The hidden states of the
unrelated subjects at layer `last_layer` are the reference point for the shift.
"""),
    code(r"""
def measure(model):
    return {"perplexity": ability.perplexity(model, tok, texts, max_len=ppl_max_len),
            "known_fact_accuracy": ability.known_fact_accuracy(model, tok, unrelated),
            "states": ability.subject_states(model, tok, unrelated, last_layer)}


t0 = time.perf_counter()
before = measure(lm)
print(f"unedited: perplexity {before['perplexity']:.2f}, known-fact accuracy {before['known_fact_accuracy']:.3f} "
      f"({time.perf_counter() - t0:.0f} s)")
"""),
    md(r"""
## Sequential edits, one method at a time

Each method edits the same `n_edits` records in batches of `batch_size` (one `SequentialState`,
`apply=True`), exactly as in notebook 07; then we measure and put the original weights back (kept
for every layer the method touched, so the restore is exact).
"""),
    code(r"""
after, efficacy, edit_seconds = {}, {}, {}
for m in methods:
    saved = {}
    state = bluebook.SequentialState()
    t0 = time.perf_counter()
    for s in range(0, len(edits), batch_size):
        res = bluebook.edit(lm, tok, edits[s:s + batch_size], m, hparams=hparams, state=state, progress=False)
        for l in res.deltas:
            saved.setdefault(l, proj_weight(lm, l).detach().clone())
        res.apply()
    state.finalize(lm)
    edit_seconds[m] = time.perf_counter() - t0
    after[m] = measure(lm)
    efficacy[m] = summarize(evaluate_counterfact(lm, tok, edits), "counterfact")["efficacy"]
    with torch.no_grad():
        for l, w in saved.items():
            proj_weight(lm, l).copy_(w)
    print(f"{m:15s} ppl {after[m]['perplexity']:7.2f}  known {after[m]['known_fact_accuracy']:.3f}  "
          f"edit efficacy {efficacy[m]:6.2f}  ({edit_seconds[m]:.0f} s)")

restored = ability.perplexity(lm, tok, texts, max_len=ppl_max_len)
assert abs(restored - before["perplexity"]) <= 1e-6 * before["perplexity"], "weights were not restored"
"""),
    md(r"""
## Representation shift of unrelated subjects

For each unrelated subject, `‖h_after − h_before‖ / ‖h_before‖` at the last critical layer. An edit
that only wrote the new facts would leave these states (almost) where they were.
"""),
    code(r"""
shifts = {m: ability.representation_shift(before["states"], after[m]["states"]) for m in methods}
for m in methods:
    print(f"{m:15s} relative shift: mean {shifts[m].mean_relative:.4f}, "
          f"median {np.median(shifts[m].relative):.4f}, max {shifts[m].relative.max():.4f}")
fig_shift = rplots.shift_distributions({m: shifts[m].relative for m in methods}, kind="violin",
                                       title=f"Unrelated subjects, layer {last_layer}")
fig_ppl = rplots.perplexity_bars({"unedited": before["perplexity"], **{m: after[m]["perplexity"] for m in methods}})
save(fig_shift, output_dir, "representation_shift")
save(fig_ppl, output_dir, "perplexity")
fig_shift
"""),
    md(r"""
## Does BLUE preserve general ability better here?

The cell below counts, over the four method pairs, how often BLUE has the smaller perplexity
increase, the smaller known-fact loss and the smaller mean representation shift. The paper's claim
is "yes" on 6–8B models after 2,000 edits. With 6 edits on a 135M model every side effect is small,
so read the counts as a measurement, not a verdict: BLUE updates 2 layers instead of 5, which tends
to move unrelated states less at the last critical layer, while its per-layer residuals are larger
(no division), which can cost perplexity. Whatever the counts are, they are written to
`metrics.json` under `blue_better`.
"""),
    code(r"""
pairs = [m for m in methods if not m.endswith("_blue") and m + "_blue" in methods]
blue_better = {"perplexity": 0, "known_fact_accuracy": 0, "representation_shift": 0}
for b in pairs:
    bb = b + "_blue"
    dp = (after[bb]["perplexity"] - after[b]["perplexity"])
    dk = (after[bb]["known_fact_accuracy"] - after[b]["known_fact_accuracy"])
    ds = shifts[bb].mean_relative - shifts[b].mean_relative
    blue_better["perplexity"] += int(dp < 0)
    blue_better["known_fact_accuracy"] += int(dk > 0)
    blue_better["representation_shift"] += int(ds < 0)
    print(f"{b:10s} BLUE − base: perplexity {dp:+.3f}, known facts {dk:+.3f}, mean relative shift {ds:+.4f}")
print(f"BLUE better in (out of {len(pairs)} pairs): {blue_better}")
"""),
    md(r"""
## Checks

Robust on any settings: every perplexity is finite and within a factor of 2 of the unedited one for
this small number of edits, known-fact accuracies are fractions, shifts are finite and
non-negative, and measuring the unedited model against itself gives a zero shift.
"""),
    code(r"""
p0 = before["perplexity"]
assert math.isfinite(p0) and p0 > 1
for m in methods:
    p = after[m]["perplexity"]
    assert math.isfinite(p) and p0 / 2 <= p <= 2 * p0, (m, p, p0)
    assert 0.0 <= after[m]["known_fact_accuracy"] <= 1.0
    assert np.all(np.isfinite(shifts[m].relative)) and np.all(shifts[m].relative >= 0)
    assert 0.0 <= efficacy[m] <= 100.0
same = ability.representation_shift(before["states"], ability.subject_states(lm, tok, unrelated, last_layer))
assert same.mean_l2 < 1e-4
"""),
    code(r"""
metrics = {
    "model": model, "n_edits": n_edits, "batch_size": batch_size, "target_steps": target_steps,
    "last_critical_layer": last_layer, "n_heldout": len(texts), "n_unrelated": len(unrelated),
    "unedited": {"perplexity": before["perplexity"], "known_fact_accuracy": before["known_fact_accuracy"]},
    "methods": {m: {"perplexity": after[m]["perplexity"],
                    "perplexity_ratio": after[m]["perplexity"] / before["perplexity"],
                    "known_fact_accuracy": after[m]["known_fact_accuracy"],
                    "shift_mean_relative": shifts[m].mean_relative, "shift_mean_l2": shifts[m].mean_l2,
                    "edit_efficacy": efficacy[m], "edit_seconds": round(edit_seconds[m], 2)}
                for m in methods},
    "blue_better": blue_better, "n_pairs": len(pairs),
}
runs.write_metrics(output_dir, metrics)
"""),
]


def main() -> None:
    print(write("07_replication.ipynb", NB07))
    print(write("08_general_ability.ipynb", NB08))


if __name__ == "__main__":
    main()
