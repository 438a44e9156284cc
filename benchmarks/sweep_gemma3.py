"""Hyperparameter sweep for Gemma-3-270m (the optional second real model): λ and v* learning rate.

``benchmarks/sweep_smollm2.py``'s procedure on held-out records: shipped CounterFact records
1000-1019 (the recorded comparison edits the first records, so the sweep never sees them), one
batch, the reference CounterFact metrics. The critical layers come from the preset
(``bluebook/presets/gemma3-270m.yaml``, chosen by causal tracing, benchmarks/trace_gemma3.py); v*
at the last critical layer is optimised once per learning rate and reused by the MEMIT/AlphaEdit
rows; MEMIT-BLUE rows optimise their first layer themselves. Writes
benchmarks/results/sweep_gemma3.json. Needs the optional Gemma wheels.

    python benchmarks/sweep_gemma3.py
"""
import time

import torch
from sweep_smollm2 import sweep

from bluebook.runs import source_commit

TARGETS = [(0.5, 25), (0.1, 25), (1.0, 25)]
LAMS = (15000.0, 2000.0, 300.0, 50.0)
# BLUE rows (a second v* optimisation each) only at v_lr 0.5, the embedded preset's value, to fit the time
# and one BLUE row on the runner-up tracing window 3-7 (summed MLP effect 0.0353 against 2-6's 0.0364)
GRID = [("memit", {"lam": lam}) for lam in LAMS] + [("memit_blue", {"lam": lam}, (0.5,)) for lam in (2000.0, 300.0)] \
    + [("memit_blue", {"lam": 2000.0, "layers": [3, 4, 5, 6, 7]}, (0.5,))]

if __name__ == "__main__":
    torch.set_num_threads(1)
    sweep(model_name="gemma3-270m", preset="gemma3-270m", n=20, skip=1000, targets=TARGETS, grid=GRID,
          out_name="sweep_gemma3",
          extra={"model": "gemma3-270m", "commit": source_commit(), "date": time.strftime("%Y-%m-%d"),
                 "torch_threads": 1, "command": "python benchmarks/sweep_gemma3.py",
                 "grid": {"targets": TARGETS, "rows": GRID}})
