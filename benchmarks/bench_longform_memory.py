"""Does v* for a long target stay memory-bounded? Peak resident memory of the long-target v*
optimisation at one layer, plain loop (every step runs the whole text so far) against the cached
path (the text before each window's key token runs once into a key/value cache; each step runs only
the window), for targets of growing length. Each (engine, length) runs in a fresh process, so one
measurement's allocator cache cannot hide another's peak. The ratio cached / plain is the result;
the cached path's peak should grow little with the target length.

    .venv/bin/python benchmarks/bench_longform_memory.py                 # SmolLM2, 64/160/300 tokens
    .venv/bin/python benchmarks/bench_longform_memory.py --model tiny-llama --lengths 40 80
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def one(model_name: str, engine: str, length: int, steps: int, layer: int | None) -> dict:
    import torch

    import bluebook
    from bluebook.core.config import TargetConfig, long_form_config
    from bluebook.core.longform import optimize_long_cached, optimize_long_plain
    from bluebook.editor.loop import resolve_config
    from bluebook.runs import PeakMemory

    torch.set_num_threads(1)
    model, tok = bluebook.load_model(model_name, progress=False) if model_name != "tiny-llama" else \
        bluebook.tiny_model("tiny-llama")
    text = " ".join(r.target_new for r in bluebook.load_longform(n=12))
    ids = tok(" " + text, add_special_tokens=False)["input_ids"][:length]
    req = bluebook.EditRequest("Tell me about {}.", "the subject", tok.decode(ids).strip())
    cfg = long_form_config(resolve_config(model, "memit_blue", None)) if model_name != "tiny-llama" else None
    window = cfg.target.window if cfg is not None else 16
    lay = layer if layer is not None else (cfg.layers[-1] if cfg is not None else 2)
    tc = TargetConfig(steps=steps, lr=0.5, window=window, early_stop=0.0, clamp_norm_factor=4.0, weight_decay=0.0)
    run = optimize_long_cached if engine == "cached" else optimize_long_plain
    with torch.no_grad():                   # touch every weight first: the rise is the optimisation's own
        model(input_ids=torch.tensor([ids[:8]]))
    t0 = time.perf_counter()
    with PeakMemory(interval=0.01) as pm:
        res = run(model, tok, req, lay, tc)
    out = pm.result()
    return {"engine": engine, "target_tokens": len(tok(req.new_text, add_special_tokens=False)["input_ids"]),
            "windows": len(res.steps), "steps": steps, "layer": lay, "seconds": round(time.perf_counter() - t0, 2),
            "peak_rss_mb": out["peak_rss_mb"], "start_rss_mb": out["start_rss_mb"],
            "rise_mb": round(out["peak_rss_mb"] - out["start_rss_mb"], 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--lengths", type=int, nargs="+", default=[64, 160, 300])
    ap.add_argument("--steps", type=int, default=2, help="Adam steps per window (the peak is reached in step 1)")
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "longform_memory.json"))
    ap.add_argument("--one", nargs=2, metavar=("ENGINE", "LENGTH"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(one(a.model, a.one[0], int(a.one[1]), a.steps, a.layer)))
        return 0
    from bluebook.runs import machine_info, source_commit, write_json

    rows = []
    for n in a.lengths:
        for engine in ("plain", "cached"):
            cmd = [sys.executable, __file__, "--model", a.model, "--steps", str(a.steps), "--one", engine, str(n)]
            if a.layer is not None:
                cmd += ["--layer", str(a.layer)]
            got = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
            rows.append(json.loads(got.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{engine:6s} {r['target_tokens']:4d} tokens {r['windows']:3d} windows: rise {r['rise_mb']:7.1f} MB, "
                  f"{r['seconds']:6.1f} s", flush=True)
    ratios = {}
    by = {(r["engine"], r["target_tokens"]): r for r in rows}
    for t in sorted({r["target_tokens"] for r in rows}):
        p, c = by[("plain", t)], by[("cached", t)]
        ratios[str(t)] = {"rise_cached_over_plain": round(c["rise_mb"] / p["rise_mb"], 3) if p["rise_mb"] > 0 else None,
                          "seconds_cached_over_plain": round(c["seconds"] / p["seconds"], 3)}
    write_json(a.out, {"benchmark": "longform_memory", "model": a.model, "rows": rows, "ratios": ratios,
                       "command": " ".join(["python", "benchmarks/bench_longform_memory.py", *(argv or sys.argv[1:])]),
                       "commit": source_commit(), "machine": machine_info(),
                       "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
    print(json.dumps(ratios, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
