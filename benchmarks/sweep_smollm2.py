"""Hyperparameter sweep for the embedded model (SmolLM2-135M): λ, v_lr, steps and AlphaEdit α.

Edits the first N shipped CounterFact records in one batch and scores them with the reference
CounterFact metrics; targets are optimised once per (v_lr, steps) and reused across λ / α.
Writes benchmarks/results/sweep_smollm2.json. Usage: python benchmarks/sweep_smollm2.py [N]
"""
import sys
import time
from pathlib import Path

import bluebook
from bluebook import metrics
from bluebook.core.config import load_preset, with_overrides
from bluebook.core.templates import context_templates
from bluebook.editor.targets import optimize_targets


def main(n=30):
    model, tok = bluebook.load_model("smollm2-135m")
    reqs = bluebook.load_counterfact(n=n)
    base = load_preset("smollm2-135m")
    templates = context_templates(model, tok, fixed=base.context_templates)
    L = max(base.layers)
    rows = []
    pre = metrics.summarize(metrics.evaluate_counterfact(model, tok, reqs), "counterfact")
    rows.append({"method": "unedited", **{k: pre[k] for k in ("efficacy", "generalization", "specificity")}})
    print(rows[-1], flush=True)
    for lr, steps in [(0.5, 25), (0.1, 25), (1.0, 25)]:
        cfg0 = with_overrides(base, target={"lr": lr, "steps": steps})
        t0 = time.time()
        tr = optimize_targets(model, tok, reqs, L, cfg0.target, templates, progress=False)
        t_targets = time.time() - t0
        grid = [("memit", {"lam": lam}) for lam in (15000.0, 2000.0, 300.0, 50.0, 10.0)]
        grid += [("alphaedit", {"alpha": a}) for a in (10.0, 1.0)]
        for method, over in grid:
            cfg = with_overrides(cfg0, **over)
            t0 = time.time()
            res = bluebook.edit(model, tok, reqs, method, hparams=cfg, precomputed_targets={L: tr}, progress=False)
            with res:
                s = metrics.summarize(metrics.evaluate_counterfact(model, tok, reqs), "counterfact")
            row = {"method": method, "v_lr": lr, "steps": steps, **over,
                   "efficacy": s["efficacy"], "generalization": s["generalization"],
                   "specificity": s["specificity"], "score": s["score"],
                   "mean_target_prob": sum(tr.final_prob) / n, "mean_steps": sum(tr.steps) / n,
                   "targets_s": round(t_targets, 1), "edit_s": round(time.time() - t0, 1),
                   "update_norm": {l: round(v["update_norm"], 2) for l, v in res.diagnostics["layers"].items()}}
            rows.append(row)
            print(row, flush=True)
    out = Path(__file__).parent / "results" / "sweep_smollm2.json"
    bluebook.runs.write_json(out, {"n_requests": n, "layers": list(base.layers), "rows": rows})
    print("wrote", out)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
