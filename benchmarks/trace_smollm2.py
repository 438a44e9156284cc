"""Causal tracing of the embedded SmolLM2-135M on CounterFact facts it knows.

Reads CounterFact records in file order, keeps those whose true object is the model's argmax
next token (``filter_known``), stops at ``--n`` known prompts, traces them (block / MLP / attention
restorations at the subject's last token by default) and writes the averaged indirect-effect
curves, the MLP peak and the proposed 5-layer window to ``bluebook/assets/smollm2_tracing.json``:
the recorded evidence for the embedded model's critical layers.

    .venv/bin/python benchmarks/trace_smollm2.py                 # the recorded configuration
    .venv/bin/python benchmarks/trace_smollm2.py --positions all # every token position (much slower)
    # notebook 02's recorded tier: ROME's 10-layer windows, per-prompt curves kept
    .venv/bin/python benchmarks/trace_smollm2.py --window 10 --out bluebook/assets/smollm2_tracing_window10.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bluebook.locate import embedding_noise_scale, filter_known, peak_layer, propose_critical_layers, trace_many  # noqa: E402
from bluebook.model.loading import load_model  # noqa: E402
from bluebook.runs import source_commit, write_json  # noqa: E402


def _portable(arg: str) -> str:
    """A command-line argument as it can be committed: paths inside the checkout made relative."""
    p = Path(arg)
    if p.is_absolute():
        return str(p.relative_to(ROOT)) if ROOT in p.parents else p.name
    return arg


def _subject_last(trace, kind):
    """One prompt's indirect effect of ``kind`` per layer at the subject's last token."""
    return trace.indirect_effect(kind)[trace.subject_range[1]]

# a source checkout beside ../shared
SHARED_SUBSET = ROOT.parent / "shared" / "data" / "counterfact" / "counterfact_subset.json"
DEFAULT_OUT = ROOT / "bluebook" / "assets" / "smollm2_tracing.json"

#: model name -> (description in the record, default output file, script that traces it)
MODELS = {
    "smollm2-135m": ("smollm2-135m (SmolLM2-135M-Instruct, Q4_1 GGUF dequantised to fp32)", DEFAULT_OUT,
                     "benchmarks/trace_smollm2.py"),
    "gemma3-270m": ("gemma3-270m (Gemma-3-270m base, Q4_K_M GGUF dequantised to fp32)",
                    ROOT / "benchmarks" / "results" / "gemma3_tracing.json", "benchmarks/trace_gemma3.py"),
}


def counterfact_items():
    """``(items, source)``: CounterFact requests in file order (bluebook's reader, else the raw JSON)."""
    try:
        from bluebook.data import load_counterfact
        return load_counterfact(), "bluebook.load_counterfact() (shipped subset)"
    except Exception as exc:  # the reader is optional here
        if not SHARED_SUBSET.exists():
            raise RuntimeError(f"no CounterFact data: the shipped reader failed ({exc}) and {SHARED_SUBSET} is missing"
                               ) from exc
        return json.loads(SHARED_SUBSET.read_text()), str(SHARED_SUBSET)


def _fields(item):
    if isinstance(item, dict):
        rw = item["requested_rewrite"]
        return item.get("case_id"), rw["prompt"], rw["subject"], rw["target_true"]["str"]
    return item.case_id, item.prompt, item.subject, item.target_true


def main(argv=None, model_name: str = "smollm2-135m", doc: str = __doc__) -> int:
    description, default_out, script = MODELS[model_name]
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50, help="known prompts to trace")
    ap.add_argument("--n-samples", type=int, default=3, help="noise draws per prompt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window", type=int, default=1)
    ap.add_argument("--width", type=int, default=5, help="width of the proposed layer window")
    ap.add_argument("--positions", default="subject_last", choices=["subject_last", "all"])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 by default: on a shared 2-core machine more threads ran up to 10x "
                         "slower; 0 leaves torch's default)")
    ap.add_argument("--out", type=Path, default=default_out)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    t_all = time.perf_counter()
    commit = source_commit()             # the code this process runs: read before any long work
    model, tok = load_model(model_name, device="cpu")
    items, source = counterfact_items()

    t0 = time.perf_counter()
    known = filter_known(model, tok, items, top_k=1, limit=args.n)  # file order, stops at n known
    position = {id(it): i for i, it in enumerate(items)}
    scanned = position[id(known[-1])] + 1 if known else len(items)
    t_filter = time.perf_counter() - t0
    print(f"filter_known: {len(known)} known among the first {scanned} records ({t_filter:.1f} s)", flush=True)
    if not known:
        print("no known prompts; nothing to trace", file=sys.stderr)
        return 1

    noise = embedding_noise_scale(model)
    summary = trace_many(model, tok, known, noise=noise, n_samples=args.n_samples, seed=args.seed,
                         window=args.window, positions=None if args.positions == "all" else "subject_last",
                         batch_size=args.batch_size, progress=True)
    peak = peak_layer(summary, "mlp")
    window = propose_critical_layers(summary, "mlp", width=args.width)
    peak1 = peak_layer(summary, "mlp", min_layer=1)
    window1 = propose_critical_layers(summary, "mlp", width=args.width, min_layer=1)
    runtime = time.perf_counter() - t_all
    print(f"traced {summary.n_prompts} prompts in {summary.seconds:.1f} s "
          f"({summary.seconds / summary.n_prompts:.1f} s/prompt); total {runtime:.1f} s", flush=True)

    def r(a):
        return [round(float(x), 6) for x in np.asarray(a)]

    for k in summary.kinds:
        print(f"{k:5s} IE@subject-last:", " ".join(f"{x:+.3f}" for x in summary.curves[k]))
    print(f"peak MLP layer: {peak}; proposed {args.width}-layer window: {window}")
    print(f"excluding layer 0: peak MLP layer {peak1}; proposed window {window1}")

    restored = "one module" if args.window == 1 else f"a window of {args.window} MLP/attention modules"
    record = {
        "model": description,
        "method": "causal tracing (ROME): Gaussian noise on the subject token embeddings, restore the clean "
                  f"output of {restored} (block outputs: one) at the subject's last token, indirect effect = "
                  "p(restored) - p(corrupted)",
        "data": source,
        "n_prompts": summary.n_prompts,
        "records_scanned": scanned,
        "known_criterion": "target_true's first token is the argmax of the clean next-token distribution",
        "case_ids": [_fields(it)[0] for it in known],
        "positions": args.positions,
        "noise_scale": noise,
        "noise_rule": "3 x std of the input-embedding matrix",
        "n_samples": args.n_samples,
        "seed": args.seed,
        "seed_rule": "prompt i uses seed + i",
        "window": args.window,
        "n_layers": len(summary.layers),
        "mean_low": summary.low,
        "mean_high": summary.high,
        "ie_subject_last": {k: r(summary.curves[k]) for k in summary.kinds},
        # per prompt (rows) and layer (columns), at the subject's last token: for intervals over prompts
        "ie_subject_last_per_prompt": {k: [r(_subject_last(t, k)) for t in summary.per_prompt] for k in summary.kinds},
        "peak_mlp_layer": peak,
        "proposed_window": window,
        "proposed_window_rule": f"{args.width} consecutive layers maximising the summed MLP indirect effect",
        "peak_mlp_layer_from_layer1": peak1,
        "proposed_window_from_layer1": window1,
        "from_layer1_note": "the same search excluding layer 0, whose MLP output re-encodes the token itself "
                            "(see bluebook.locate.propose_critical_layers)",
        "grid": ({k: [r(row) for row in summary.grid[k]] for k in summary.kinds}
                 if args.positions == "all" else None),
        "row_labels": list(summary.row_labels),
        "runtime_seconds": round(runtime, 1),
        "trace_seconds": round(summary.seconds, 1),
        "filter_seconds": round(t_filter, 1),
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads",
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__,
                     "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
        "command": f"python {script} " + " ".join(
            _portable(a) for a in (argv if argv is not None else sys.argv[1:])),
        "commit": commit,
        "wall_s": round(runtime, 1),
    }
    write_json(args.out, record)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
