"""Edit wall time per batch for every method variant, split into targets / keys / solve / other
(statistics lookup, templates, applying the update), with BLUE / base ratios and peak memory.

Each (batch size, variant) runs in its own subprocess, so its peak RSS (and CUDA peak on a GPU) is
that variant's alone; a baseline worker that only loads the model and the cached statistics gives
the memory every variant starts from. Statistics are computed (or loaded) once before timing.
Usage: python benchmarks/bench_edits.py [--batch 20 100] [--methods memit,memit_blue,...] [--device cuda]
       [--dataset zsre] (writes edits_zsre_b<n>.json)
       [--no-regroup]   (writes edits_b<n>_no_regroup.json: the v* loop without suffix regrouping)
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import peak_rss_mb, write

import bluebook

VARIANTS = ("memit", "memit_blue", "alphaedit", "alphaedit_blue", "rect", "rect_blue", "prune", "prune_blue")


def _split(timing: list[dict]) -> dict:
    """Where one v* optimisation's time went: prefix pass, first iteration (it also runs the blocks
    at and below the edited layer), later iterations, and the work done in them counted in
    request-iterations (requests still optimised, summed over iterations)."""
    later = [s for t in timing for s in t["step_seconds"][1:]]
    return {"prefix_s": sum(t["prefix_seconds"] for t in timing),
            "first_iteration_s": sum(t["step_seconds"][0] for t in timing if t["step_seconds"]),
            "later_iterations_s": sum(later), "later_iterations": len(later),
            "later_request_iterations": sum(a for t in timing for a in t["step_active"][1:])}


def worker(method: str, n: int, device: str, regroup: bool = True, dataset: str = "counterfact") -> dict:
    model, tok = bluebook.load_model("smollm2-135m", device=device)
    cfg = bluebook.preset_for(model)
    state = bluebook.SequentialState()
    got = bluebook.layer_stats(model, tok, list(cfg.layers), cfg.stats, progress=False)   # cached: a load
    state.stats = {l: got[l].C for l in cfg.layers}
    row = {"batch": n, "method": method}
    if method != "baseline":
        reqs = (bluebook.load_zsre if dataset == "zsre" else bluebook.load_counterfact)(n=n)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        hp = None if regroup else {"target": {"regroup_below": 0.0}}    # A/B switch for suffix regrouping
        res = bluebook.edit(model, tok, reqs, method, state=state, apply=True, progress=False, hparams=hp)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        tm = res.diagnostics["timings"]
        row.update(wall_s=wall, **tm, other=wall - sum(tm.values()),
                   target_steps_mean={l: sum(t.steps) / len(t.steps) for l, t in res.targets.items()},
                   target_split={l: _split(t.timing) for l, t in res.targets.items()},
                   layers_changed=res.changed_layers())
    row["peak_rss_mb"] = peak_rss_mb()
    if torch.cuda.is_available():
        row["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, nargs="+", default=[20, 100])
    ap.add_argument("--methods", default=",".join(VARIANTS))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dataset", default="counterfact", choices=["counterfact", "zsre"],
                    help="the shipped records to edit (the first N of them)")
    ap.add_argument("--no-regroup", action="store_true",
                    help="never regroup the v* loop's suffix groups as requests stop (for A/B runs)")
    ap.add_argument("--worker", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("ROW " + json.dumps(worker(args.worker[0], int(args.worker[1]), args.device,
                                         regroup=not args.no_regroup, dataset=args.dataset)), flush=True)
        return
    model, tok = bluebook.load_model("smollm2-135m", device=args.device)
    cfg = bluebook.preset_for(model)
    bluebook.layer_stats(model, tok, list(cfg.layers), cfg.stats)           # warm the cache
    del model

    def run(method, n):
        flags = (["--no-regroup"] if args.no_regroup else []) + ["--dataset", args.dataset]
        p = subprocess.run([sys.executable, __file__, "--device", args.device, *flags, "--worker", method, str(n)],
                           capture_output=True, text=True, cwd=Path(__file__).parent)
        if p.returncode != 0:
            raise RuntimeError(f"{method} @ {n} failed:\n{p.stderr[-3000:]}")
        return json.loads(next(l for l in p.stdout.splitlines() if l.startswith("ROW "))[4:])

    base = run("baseline", 0)
    print("baseline (model + statistics loaded):", base, flush=True)
    for n in args.batch:                 # one results file per batch size, rewritten after every variant
        rows = []
        for method in args.methods.split(","):
            row = run(method, n)
            row["rss_over_baseline_mb"] = row["peak_rss_mb"] - base["peak_rss_mb"]
            rows.append(row)
            print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
            by = {r["method"]: r["wall_s"] for r in rows}
            ratios = {m: by[m + "_blue"] / by[m] for m in by if m + "_blue" in by}
            name = ("edits_zsre_" if args.dataset == "zsre" else "edits_") + f"b{n}"
            name += "_no_regroup" if args.no_regroup else ""
            path = write(name, {"baseline": base, "dataset": args.dataset, "batch": n,
                                "regroup": not args.no_regroup, "rows": rows, "blue_over_base": ratios})
        print(f"batch {n}: BLUE / base wall-time ratios:", {k: round(v, 3) for k, v in ratios.items()})
        print("wrote", path)

if __name__ == "__main__":
    main()
