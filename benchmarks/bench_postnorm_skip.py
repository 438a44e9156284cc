"""Block skipping in the fast v* engine on a post-norm family, on and off, side by side.

On Gemma-2/3 δ is added inside block ``l`` (to its MLP output), so after the first step the fast
engine skips blocks ``0 .. l-1`` (their outputs cannot change) instead of running the whole stack.
This times the same optimisation with that skipping and with it turned off (every step runs every
block, as before the change), alternating the two ``--repeats`` times, and checks both give the same
targets. Writes benchmarks/results/postnorm_skip_<model>.json.

    python benchmarks/bench_postnorm_skip.py                     # gemma3-270m (optional wheels)
"""
from __future__ import annotations

import argparse
import time
from unittest import mock

import torch
from common import write

import bluebook
import bluebook.fast.targets as fast
from bluebook.core.config import with_overrides
from bluebook.core.templates import context_templates
from bluebook.editor.targets import optimize_targets


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--n", type=int, default=8, help="requests")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model, tok = bluebook.load_model(args.model, progress=False)
    cfg = bluebook.preset_for(model, "memit")
    tcfg = with_overrides(cfg, target={"steps": args.steps, "early_stop": 0.0}).target
    templates = context_templates(model, tok, seed=cfg.template_seed, fixed=cfg.context_templates)
    reqs = bluebook.load_counterfact(n=args.n)
    layer = max(cfg.layers)
    times, z = {"skip": [], "no_skip": []}, {}
    for _ in range(args.repeats):
        for mode in ("no_skip", "skip"):
            patch = mock.patch.object(fast, "blocks_return_tensors", lambda *a: False) if mode == "no_skip" \
                else mock.patch.object(fast, "blocks_return_tensors", fast.blocks_return_tensors)
            with patch:
                t0 = time.perf_counter()
                res = optimize_targets(model, tok, reqs, layer, tcfg, templates, progress=False)
                times[mode].append(time.perf_counter() - t0)
            z[mode] = res.z
    per_request = {m: min(t) / args.n for m, t in times.items()}
    out = {"model": args.model, "layer": layer, "n_layers": model.config.num_hidden_layers, "requests": args.n,
           "steps": args.steps, "seconds": times, "per_request_s": per_request,
           "ratio_skip_over_no_skip": per_request["skip"] / per_request["no_skip"],
           "max_rel_z_diff": float(((z["skip"] - z["no_skip"]).norm(dim=1) / z["no_skip"].norm(dim=1)).max())}
    write(f"postnorm_skip_{args.model}", out)
    print(out)
    return out


if __name__ == "__main__":
    main()
