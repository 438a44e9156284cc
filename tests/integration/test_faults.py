"""Kill the sequential runner (SIGKILL) at many points; every resume must end with exactly the results
of an uninterrupted run: same tables, same per-record columns at every evaluation point, same weights."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

DRIVER = Path(__file__).with_name("_fault_driver.py")

# (kind, target, n): the n-th call / atomic write at which the process dies
POINTS = [
    ("call", "bluebook.core.stats.collect_second_moments", 1),          # during statistics
    ("call", "bluebook.editor.loop.optimize_targets", 1),               # during the first v*
    ("call", "bluebook.editor.loop.optimize_targets", 6),               # v* of BLUE's second layer, later batch
    ("call", "bluebook.core.solvers.memit_delta", 2),                   # during a solve
    ("call", "bluebook.core.solvers.alphaedit_delta", 3),               # during an AlphaEdit solve
    ("call", "bluebook.editor.loop.read_states", 4),                    # reading keys
    ("write", "progress.json", 2),                                      # while a checkpoint's pointer is written
    ("write", "weights_b2.safetensors", 1),                             # while a checkpoint is written
    ("write", "state_b1.safetensors", 1),                               # while the sequential state is written
    ("call", "bluebook.experiments.sequence.evaluate_counterfact", 2),  # during an evaluation point
    ("call", "bluebook.metrics.suite.AbilitySuite.evaluate", 3),        # during general ability
    ("write", "edits_00004.json", 1),                                   # while an evaluation is written
    ("write", "cases.json", 1),                                         # while the final cases are written
    ("write", "results.json", 1),                                       # while the tables are written
]


def _env(cache):
    env = dict(os.environ, BLUEBOOK_CACHE=str(cache), OMP_NUM_THREADS="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def _run(out, cache, *fault):
    return subprocess.run([sys.executable, str(DRIVER), str(out), *map(str, fault)], env=_env(cache),
                          capture_output=True, text=True, timeout=600)


def _results(out: Path) -> dict:
    got = {}
    res = json.loads((out / "results.json").read_text())
    got["summaries"] = {m: r["summary"] for m, r in res["methods"].items()}
    for f in sorted(out.glob("*/evals/*.json")):
        rec = json.loads(f.read_text())
        got[str(f.relative_to(out))] = (rec["columns"], rec["summary"],
                                        json.dumps(rec["ability"], sort_keys=True) if rec["ability"] else None)
    for m in ("memit", "alphaedit_blue"):
        prog = json.loads((out / m / "progress.json").read_text())
        got[m + ":batches"] = [(b["case_ids"], b["layers"], b["target_steps"]) for b in prog["batches"]]
        w = load_file(str(out / m / prog["weights_file"]))
        got[m + ":weights"] = {k: v.double().sum().item() for k, v in w.items()}
        got[m + ":weights_exact"] = w
    return got


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults_ref")
    r = _run(base / "out", base / "cache")
    assert r.returncode == 0, r.stderr[-2000:]
    return _results(base / "out")


IDS = [f"{k}:{t if k == 'write' else t.split('.')[-1]}:{n}" for k, t, n in POINTS]


@pytest.mark.parametrize("kind,target,n", POINTS, ids=IDS)
def test_resume_after_sigkill_gives_the_uninterrupted_results(tmp_path, reference, kind, target, n):
    out, cache = tmp_path / "out", tmp_path / "cache"
    died = _run(out, cache, kind, target, n)
    assert died.returncode == -signal.SIGKILL, f"the fault at {target}#{n} never fired:\n{died.stderr[-1500:]}"
    again = _run(out, cache)
    assert again.returncode == 0, again.stderr[-2000:]
    got = _results(out)
    assert got.keys() == reference.keys()
    for k in reference:
        if k.endswith(":weights_exact"):
            for name, t in reference[k].items():
                assert (got[k][name] == t).all(), (k, name)
        else:
            assert got[k] == reference[k], k
