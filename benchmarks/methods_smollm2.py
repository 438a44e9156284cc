"""Acceptance run: the four locate-then-edit methods with and without BLUE on the embedded model.

Each of the 8 variants (memit, alphaedit, rect, prune, each with ``_blue``) edits the first N
shipped CounterFact requests SEQUENTIALLY in batches of B (one SequentialState per variant,
``apply=True`` for every batch), starting from the unedited weights (snapshotted once and copied
back bit-exactly after each variant). Then CounterFact efficacy / generalization / specificity on
those N requests (``bluebook.metrics``), plus the edit wall time of every batch split into
targets / keys / solve (``result.diagnostics["timings"]``).

Writes benchmarks/results/methods_smollm2.json and prints a table.
Usage: python benchmarks/methods_smollm2.py [N] [B]      (defaults: 40 requests, batches of 10)
"""
import sys
import time
from pathlib import Path

import bluebook
from bluebook import metrics
from bluebook.model.weights import restore_weights, snapshot_weights, update_norms, weights_changed

METHODS = ("memit", "alphaedit", "rect", "prune")
KEYS = ("efficacy", "generalization", "specificity", "score")


def run_variant(model, tok, name, requests, batch_size, snapshot, shared):
    state = bluebook.SequentialState()
    state.stats, state.projectors = shared          # C and P depend only on the unedited model
    batches = []
    t_all = time.perf_counter()
    res = None
    for s in range(0, len(requests), batch_size):
        t0 = time.perf_counter()
        res = bluebook.edit(model, tok, requests[s:s + batch_size], name, state=state, apply=True, progress=False)
        tm = {k: round(v, 2) for k, v in res.diagnostics["timings"].items()}
        tm["total"] = round(time.perf_counter() - t0, 2)
        tm["target_steps_mean"] = {l: sum(tr.steps) / len(tr.steps) for l, tr in res.targets.items()}
        batches.append(tm)
        print(f"  {name} batch {len(batches)}: {tm}", flush=True)
    if res.diagnostics["config"].prune_reference:
        state.finalize(model)
    edit_seconds = time.perf_counter() - t_all
    t0 = time.perf_counter()
    summary = metrics.summarize(metrics.evaluate_counterfact(model, tok, requests))
    row = {"method": name, **{k: summary[k] for k in KEYS},
           **{f"{k}_std": summary[f"{k}_std"] for k in KEYS[:3]},
           "edit_seconds": round(edit_seconds, 1), "eval_seconds": round(time.perf_counter() - t0, 1),
           "changed_layers": weights_changed(snapshot, model),
           "update_norms": {l: round(v, 4) for l, v in update_norms(snapshot, model).items() if v > 0},
           "batches": batches}
    restore_weights(model, snapshot)
    assert weights_changed(snapshot, model) == [], "weights were not restored"
    return row


def main(n=40, batch_size=10, methods=METHODS, tag=""):
    model, tok = bluebook.load_model("smollm2-135m")
    requests = bluebook.load_counterfact(n=n)
    cfg = bluebook.preset_for(model, "memit")
    snapshot = snapshot_weights(model)
    pre = metrics.summarize(metrics.evaluate_counterfact(model, tok, requests))
    rows = [{"method": "unedited", **{k: pre[k] for k in KEYS}}]
    print(rows[0], flush=True)
    shared = ({}, {})
    out = Path(__file__).parent / "results" / f"methods_smollm2{tag}.json"
    t_start = time.time()
    for m in methods:
        for name in (m, f"{m}_blue"):
            rows.append(run_variant(model, tok, name, requests, batch_size, snapshot, shared))
            r = rows[-1]
            print(f"{name}: eff {r['efficacy']} gen {r['generalization']} spe {r['specificity']} "
                  f"changed {r['changed_layers']} ({r['edit_seconds']} s)", flush=True)
            bluebook.runs.write_json(out, {"model": "smollm2-135m", "n_requests": n, "batch_size": batch_size,
                                           "critical_layers": list(cfg.layers), "target": vars(cfg.target),
                                           "lam": cfg.lam, "alpha": cfg.alpha, "alpha_blue": cfg.alpha_blue,
                                           "rows": rows, "wall_seconds": round(time.time() - t_start, 1)})
    print()
    head = f"{'method':<16}{'eff':>8}{'gen':>8}{'spe':>8}{'score':>8}  {'targets':>8}{'keys':>7}{'solve':>7}  layers"
    print(head)
    print("-" * len(head))
    for r in rows:
        b = r.get("batches") or []
        tsum = lambda k: sum(x.get(k, 0.0) for x in b) / max(len(b), 1)
        print(f"{r['method']:<16}{r['efficacy']:>8}{r['generalization']:>8}{r['specificity']:>8}{r['score']:>8}  "
              f"{tsum('targets'):>8.1f}{tsum('keys'):>7.1f}{tsum('solve'):>7.1f}  {r.get('changed_layers', '')}")
    print("(timings: mean seconds per batch)")
    print("wrote", out)


if __name__ == "__main__":
    # python benchmarks/methods_smollm2.py [N] [B] [methods,comma,separated] (a subset writes its own file)
    args = [int(a) for a in sys.argv[1:3]]
    kw = {}
    if len(sys.argv) > 3:
        kw = {"methods": tuple(sys.argv[3].split(",")), "tag": "_" + sys.argv[3].replace(",", "_")}
    main(*args, **kw)
