"""Is memory flat along a sequential run? A controlled measurement: one process edits ``--batches``
batches of ``--batch`` CounterFact records in sequence (``bluebook.edit(..., state=state,
apply=True)``, the replicate runner's loop without its evaluation), and after every batch records
the peak resident memory of the batch, the resident memory after a garbage collection, and the
bytes held by the sequential state. Python's allocator and glibc keep freed memory for reuse, so a
rise over the first batches that then levels off is expected; a rise that keeps growing with the
number of batches is a leak. The slope over the second half of the run separates the two.

    .venv/bin/python benchmarks/bench_memory.py                         # SmolLM2, 8 batches of 20
    .venv/bin/python benchmarks/bench_memory.py --model tiny-llama --batches 12 --batch 8
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bluebook  # noqa: E402
from bluebook.editor.loop import prepare_stats  # noqa: E402
from bluebook.runs import PeakMemory, machine_info, source_commit, write_json  # noqa: E402


def state_bytes(state) -> int:
    tensors = list(state.C_p.values()) + list(state.W0.values()) + list(state.stats.values())
    tensors += list(state.projectors.values())
    return sum(t.numel() * t.element_size() for t in tensors)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--method", default="memit")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--steps", type=int, default=5, help="v* steps (memory does not depend on them)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "memory.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    commit, t_all = source_commit(), time.perf_counter()
    if args.model.startswith("tiny-"):
        model, tok = bluebook.tiny_model(args.model)
        hp = {"target": {"steps": args.steps}, "stats": {"n_samples": 40, "max_len": 64},
              "context_templates": [["{}"]], "layers": [0, 1]}
    else:
        model, tok = bluebook.load_model(args.model, progress=False)
        hp = {"target": {"steps": args.steps}}
    reqs = bluebook.load_counterfact(n=args.batches * args.batch)
    state = bluebook.SequentialState()
    prepare_stats(model, tok, args.method, hparams=hp, state=state)     # C of the unedited model, once
    proc, rows = psutil.Process(), []
    for b in range(args.batches):
        chunk = reqs[b * args.batch:(b + 1) * args.batch]
        t0 = time.perf_counter()
        with PeakMemory() as pm:
            bluebook.edit(model, tok, chunk, args.method, hparams=hp, state=state, apply=True, progress=False)
        gc.collect()
        rows.append({"batch": b + 1, "seconds": round(time.perf_counter() - t0, 2),
                     "peak_rss_mb": pm.result()["peak_rss_mb"],
                     "rss_after_gc_mb": round(proc.memory_info().rss / 2**20, 1),
                     "state_mb": round(state_bytes(state) / 2**20, 2)})
        print(rows[-1], flush=True)
    half = rows[len(rows) // 2:]
    slope = float(np.polyfit([r["batch"] for r in half], [r["rss_after_gc_mb"] for r in half], 1)[0]) if len(half) > 1 \
        else None
    record = {"model": args.model, "method": args.method, "batch": args.batch, "batches": args.batches,
              "rows": rows, "slope_second_half_mb_per_batch": slope,
              "command": "python benchmarks/bench_memory.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "commit": commit, "machine": machine_info(), "wall_s": round(time.perf_counter() - t_all, 1),
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    print(f"RSS after gc, second half: {slope:+.2f} MB per batch" if slope is not None else "too few batches")
    write_json(args.out, record)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
