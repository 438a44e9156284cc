"""Edit wall time per batch for every method variant, split into targets / keys / solve / apply,
with BLUE / base ratios and peak memory. Statistics are computed (or loaded) before timing.
Usage: python benchmarks/bench_edits.py [--batch 20 100] [--methods memit,memit_blue,...]"""
import argparse
import time

import torch

import bluebook
from bluebook.specs import proj_weight

from common import peak_rss_mb, write


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, nargs="+", default=[20])
    ap.add_argument("--methods", default=",".join(m for m in bluebook.METHODS if not m.startswith("memit_seq")))
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    model, tok = bluebook.load_model("smollm2-135m", device=args.device)
    methods = args.methods.split(",")
    cfg = bluebook.preset_for(model)
    bluebook.layer_stats(model, tok, list(cfg.layers), cfg.stats)           # warm the cache
    rows = []
    for n in args.batch:
        reqs = bluebook.load_counterfact(n=n)
        for method in methods:
            state = bluebook.SequentialState()
            saved = {l: proj_weight(model, l).detach().clone() for l in cfg.layers}
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            res = bluebook.edit(model, tok, reqs, method, state=state, apply=True, progress=False)
            wall = time.perf_counter() - t0
            with torch.no_grad():
                for l, w in saved.items():
                    proj_weight(model, l).copy_(w)
            row = {"batch": n, "method": method, "wall_s": wall, **res.diagnostics["timings"],
                   "target_steps_mean": {l: sum(t.steps) / len(t.steps) for l, t in res.targets.items()},
                   "peak_rss_mb": peak_rss_mb()}
            if torch.cuda.is_available():
                row["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
            rows.append(row)
            print(row, flush=True)
    by = {(r["batch"], r["method"]): r["wall_s"] for r in rows}
    ratios = {f"{m}@{n}": by[(n, m + "_blue")] / by[(n, m)] for (n, m) in by if (n, m + "_blue") in by}
    print("BLUE / base wall-time ratios:", ratios)
    print("wrote", write("edits", {"rows": rows, "blue_over_base": ratios}))


if __name__ == "__main__":
    main()
