"""Gemma-3-270m, one batch of geography counterfacts: memit / memit_blue / alphaedit / alphaedit_blue.

The experiment of issue 36: the first N shipped CounterFact records whose relation is geographic
(located in country / continent / capital / capital of / located in territory), edited in one batch
with each method, scored with the CounterFact probability comparisons (efficacy, paraphrase,
neighbourhood success rates). By default the *generic* preset (critical-layer window scaled to the
depth: layers 2-5 for 18 layers) with statistics from 300 texts, the settings a new user meets;
``--preset measured`` uses the Gemma-3-270m preset instead. All methods reuse one v* optimisation at
the last critical layer on the unedited model (the first target every method computes there).
The result records the code commit, so the same script gives the table before and after a fix:

    python benchmarks/gemma3_before_after.py --label after
    # an earlier commit's maths: export it (git archive), copy this script, benchmarks/common.py's
    # folder and the current bluebook/model/loading.py + bluebook/core/presets.py into it, and run
    # there with PYTHONPATH pointing at it and --source-commit <commit> --label before
Needs the optional Gemma wheels (``python -m bluebook prepare --model gemma3-270m`` says how).
"""
from __future__ import annotations

import argparse
import subprocess
import time

import torch
from common import RESULTS, write

import bluebook
from bluebook import metrics
from bluebook.core.config import with_overrides
from bluebook.core.presets import generic_preset
from bluebook.core.templates import context_templates
from bluebook.editor.targets import optimize_targets
from bluebook.runs import source_commit

#: CounterFact relations about places (Wikidata ids)
GEOGRAPHY = ("P17", "P30", "P36", "P1376", "P131")
METHODS = ("memit", "memit_blue", "alphaedit", "alphaedit_blue")


def geography_requests(n: int, skip: int = 0):
    """The first ``n`` shipped CounterFact records with a geographic relation, after ``skip`` of them."""
    reqs = [r for r in bluebook.load_counterfact() if r.relation_id in GEOGRAPHY]
    if len(reqs) < skip + n:
        raise ValueError(f"n={n} with skip={skip}: only {len(reqs)} geographic records are shipped")
    return reqs[skip:skip + n]


def score(model, tok, reqs) -> dict:
    s = metrics.summarize(metrics.evaluate_counterfact(model, tok, reqs), "counterfact")
    return {k: s[k] for k in ("efficacy", "generalization", "specificity", "efficacy_magnitude",
                              "generalization_magnitude", "specificity_magnitude", "score")}


def _commit_subject(commit: str | None) -> str | None:
    if not commit:
        return None
    try:
        return subprocess.run(["git", "log", "-1", "--format=%s", commit.split("+")[0]], capture_output=True,
                              text=True, check=True, cwd=RESULTS.parent.parent).stdout.strip()[:200]
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", required=True, help="result name suffix, e.g. before / after")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--preset", default="generic", choices=["generic", "measured"])
    ap.add_argument("--stats-samples", type=int, default=300)
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--source-commit", default=None,
                    help="the commit the code comes from, when running an exported tree (git archive) that is "
                         "not a git checkout, e.g. an earlier commit's code with this script and the loader added")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    commit = args.source_commit or source_commit()
    t_all = time.perf_counter()
    model, tok = bluebook.load_model("gemma3-270m", device="cpu", progress=False)
    base = generic_preset(model) if args.preset == "generic" else bluebook.preset_for(model)
    base = with_overrides(base, stats={"n_samples": args.stats_samples})
    reqs = geography_requests(args.n)
    templates = context_templates(model, tok, seed=base.template_seed, fixed=base.context_templates)
    L = max(base.layers)

    rows = [{"method": "unedited", **score(model, tok, reqs)}]
    print(rows[-1], flush=True)
    t0 = time.perf_counter()
    tr = optimize_targets(model, tok, reqs, L, base.target, templates, progress=False)
    t_targets = time.perf_counter() - t0
    print(f"v* at layer {L}: {t_targets:.1f} s, mean p(target) {sum(tr.final_prob) / len(reqs):.3f}", flush=True)
    for method in args.methods:
        t0 = time.perf_counter()
        res = bluebook.edit(model, tok, reqs, method, hparams=base, templates=templates,
                            precomputed_targets={L: tr}, progress=False)
        t_edit = time.perf_counter() - t0
        with res:
            row = {"method": method, **score(model, tok, reqs), "edit_s": round(t_edit, 1),
                   "updated_layers": sorted(int(l) for l in res.diagnostics["layers"]),
                   "update_norm": {str(l): round(float(v["update_norm"]), 3)
                                   for l, v in res.diagnostics["layers"].items()}}
        rows.append(row)
        print(row, flush=True)
    out = write(f"gemma3_before_after_{args.label}", {
        "model": "gemma3-270m (Gemma-3-270m base, Q4_K_M GGUF dequantised to fp32)",
        "what": "one batch of geography counterfacts, CounterFact probability comparisons; efficacy / "
                "generalization (paraphrase) / specificity (neighbourhood) are success rates in percent",
        "requests": {"n": len(reqs), "relations": list(GEOGRAPHY), "rule": "first n shipped CounterFact records "
                     "with one of these relation ids, in file order", "case_ids": [r.case_id for r in reqs]},
        "preset": args.preset, "layers": list(base.layers), "blue_layers": list(base.boundary_layers()),
        "lam": base.lam, "alpha": base.alpha, "target": vars(base.target),
        "stats_samples": args.stats_samples, "shared_targets_layer": L,
        "targets_s": round(t_targets, 1), "mean_target_prob": sum(tr.final_prob) / len(reqs),
        "rows": rows, "commit": commit, "commit_subject": _commit_subject(commit),
        "wall_s": round(time.perf_counter() - t_all, 1),
        "command": "python benchmarks/gemma3_before_after.py " + " ".join(argv if argv is not None else
                                                                          __import__("sys").argv[1:]),
    })
    print("wrote", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
