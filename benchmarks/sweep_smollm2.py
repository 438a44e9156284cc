"""Hyperparameter sweep for the embedded model (SmolLM2-135M): λ, v_lr, steps and AlphaEdit α.

Edits the first N shipped CounterFact records in one batch and scores them with the reference
CounterFact metrics; targets are optimised once per (v_lr, steps) and reused across λ / α.
Writes benchmarks/results/sweep_smollm2.json. Usage: python benchmarks/sweep_smollm2.py [N]
``sweep`` is shared with benchmarks/sweep_gemma3.py (another model, held-out records, BLUE rows).
"""
import sys
import time
from pathlib import Path

import bluebook
from bluebook import metrics
from bluebook.core.config import load_preset, with_overrides
from bluebook.core.templates import context_templates
from bluebook.editor.targets import optimize_targets

SMOLLM2_TARGETS = [(0.5, 25), (0.1, 25), (1.0, 25)]
SMOLLM2_GRID = [("memit", {"lam": lam}) for lam in (15000.0, 2000.0, 300.0, 50.0, 10.0)] + \
               [("alphaedit", {"alpha": a}) for a in (10.0, 1.0)]


def sweep(model_name="smollm2-135m", preset="smollm2-135m", n=30, skip=0, targets=SMOLLM2_TARGETS,
          grid=SMOLLM2_GRID, out_name="sweep_smollm2", extra=None):
    """Edit CounterFact records ``skip .. skip + n`` in one batch for every (v_lr, steps) in ``targets``
    and every ``(method, overrides)`` in ``grid``; v* at the last critical layer is optimised once per
    (v_lr, steps) and reused by every row (BLUE's optimisation at its first layer runs per row)."""
    model, tok = bluebook.load_model(model_name)
    reqs = bluebook.load_counterfact()[skip:skip + n]
    if len(reqs) < n:
        raise ValueError(f"n={n} with skip={skip}: only {len(reqs) + skip} shipped CounterFact records")
    base = load_preset(preset)
    templates = context_templates(model, tok, fixed=base.context_templates)
    L = max(base.layers)
    rows = []
    t_start = time.time()
    pre = metrics.summarize(metrics.evaluate_counterfact(model, tok, reqs), "counterfact")
    rows.append({"method": "unedited", **{k: pre[k] for k in ("efficacy", "generalization", "specificity")}})
    print(rows[-1], flush=True)
    for lr, steps in targets:
        cfg0 = with_overrides(base, target={"lr": lr, "steps": steps})
        t0 = time.time()
        tr = optimize_targets(model, tok, reqs, L, cfg0.target, templates, progress=False)
        t_targets = time.time() - t0
        for method, over, *only in grid:      # an optional third item: the v_lr values the row runs at
            if only and lr not in only[0]:
                continue
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
    out = Path(__file__).parent / "results" / f"{out_name}.json"
    payload = {"n_requests": n, "layers": list(base.layers), "rows": rows}
    if extra is not None:
        payload = {**extra, "records": [skip, skip + n], "case_ids": [r.case_id for r in reqs],
                   "preset": preset, "blue_layers": list(base.boundary_layers()),
                   "wall_s": round(time.time() - t_start, 1), **payload}
    bluebook.runs.write_json(out, payload)
    print("wrote", out)


def main(n=30):
    sweep(n=n)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
