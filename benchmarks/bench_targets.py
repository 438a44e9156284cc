"""Target (v*) optimisation speed: bluebook's batched, prefix-cached loop vs the plain reference loop.

Side by side in one run, on the embedded model, the first N shipped CounterFact requests at the last
critical layer of the preset:
  * plain:    the reference algorithm one request at a time (full forward, full logits; the
              authors' code measured 17.8 s per request on this 2-core CPU, reference-baseline.md)
  * one-by-one: bluebook's loop called with one request at a time
  * batched:  bluebook's loop with all requests in one call
Reports medians, ratios, and max |Δz| between the variants (same z expected within 1e-4).
Usage: python benchmarks/bench_targets.py [--sizes 10 50 100] [--plain 5] [--steps 25] [--lr 0.1]
"""
import argparse

import torch
from common import peak_rss_mb, timed, write

import bluebook
from bluebook.core.config import with_overrides
from bluebook.core.targets import optimize_target_plain
from bluebook.core.templates import context_templates
from bluebook.editor.targets import optimize_targets


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 100])
    ap.add_argument("--plain", type=int, default=5, help="requests timed with the plain loop")
    ap.add_argument("--one-by-one", type=int, default=10, help="requests timed one by one")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--lr", type=float, default=None, help="default: the preset's")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    model, tok = bluebook.load_model("smollm2-135m", device=args.device)
    cfg = bluebook.preset_for(model)
    cfg = with_overrides(cfg, target={"steps": args.steps, **({"lr": args.lr} if args.lr else {})})
    L = max(cfg.layers)
    templates = context_templates(model, tok, fixed=cfg.context_templates)
    reqs = bluebook.load_counterfact(n=max(args.sizes))
    out = {"layer": L, "target": vars(cfg.target), "rows": []}

    plain = [timed(lambda r=r: optimize_target_plain(model, tok, r, L, cfg.target, templates))
             for r in reqs[:args.plain]]
    t_plain = sum(t for _, t, _ in plain) / len(plain)
    one = [timed(lambda r=r: optimize_targets(model, tok, [r], L, cfg.target, templates, progress=False))
           for r in reqs[:args.one_by_one]]
    t_one = sum(t for _, t, _ in one) / len(one)
    dz_plain = max(float((a.z - b.z).abs().max()) for (a, _, _), (b, _, _) in zip(plain, one))
    out["plain_s_per_request"] = t_plain
    out["one_by_one_s_per_request"] = t_one
    out["max_abs_dz_plain_vs_bluebook"] = dz_plain
    print(f"plain reference loop: {t_plain:.2f} s/request; bluebook one-by-one: {t_one:.2f} s/request; "
          f"max|dz| {dz_plain:.2e}", flush=True)
    for n in args.sizes:
        res, t, _ = timed(lambda: optimize_targets(model, tok, reqs[:n], L, cfg.target, templates, progress=False))
        dz = max(float((res.z[j] - one[j][0].z[0]).abs().max()) for j in range(min(n, len(one))))
        row = {"n": n, "batched_s": t, "batched_s_per_request": t / n,
               "speedup_vs_one_by_one": t_one / (t / n), "speedup_vs_plain": t_plain / (t / n),
               "max_abs_dz_vs_one_by_one": dz, "mean_steps": sum(res.steps) / n,
               "mean_final_prob": sum(res.final_prob) / n}
        out["rows"].append(row)
        print(row, flush=True)
    out["peak_rss_mb"] = peak_rss_mb()
    if torch.cuda.is_available():
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("wrote", write("targets", out))


if __name__ == "__main__":
    main()
