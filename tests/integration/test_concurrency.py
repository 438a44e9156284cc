"""Two processes on one statistics cache and one run folder at once: no crash, no corruption, the
same numbers as one process alone."""
import json
import os
import subprocess
import sys
from pathlib import Path

STATS = """
import hashlib, sys
import bluebook
from bluebook.core.config import StatsConfig
from bluebook.core.stats import layer_stats
from bluebook.model.loading import tiny_model
model, tok = tiny_model("tiny-llama")
got = layer_stats(model, tok, [0, 1, 2], StatsConfig(n_samples=60, max_len=64), progress=False)
print(";".join(hashlib.sha256(got[l].C.double().numpy().tobytes()).hexdigest()[:16] for l in (0, 1, 2)))
"""
DRIVER = Path(__file__).with_name("_fault_driver.py")


def _env(cache):
    env = dict(os.environ, BLUEBOOK_CACHE=str(cache), OMP_NUM_THREADS="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def test_two_processes_fill_one_statistics_cache_at_once(tmp_path):
    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", STATS], env=_env(cache), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    hashes = {o[0].strip().splitlines()[-1] for o in outs}
    assert len(hashes) == 1                                     # both computed (or read) the same C
    later = subprocess.run([sys.executable, "-c", STATS], env=_env(cache), capture_output=True, text=True,
                           timeout=600)
    assert later.returncode == 0 and later.stdout.strip().splitlines()[-1] in hashes   # the cache reads back
    assert not list(cache.rglob("*.tmp"))                       # no half-written entry left behind
    alone = subprocess.run([sys.executable, "-c", STATS], env=_env(tmp_path / "fresh"), capture_output=True,
                           text=True, timeout=600)
    assert alone.stdout.strip().splitlines()[-1] in hashes       # same as a process alone, fresh cache


def test_two_runs_share_one_folder_one_method_each(tmp_path):
    """The recorded runs' layout: one process per method, one output folder, one cache."""
    from bluebook.experiments.curves import load_run

    out, cache = tmp_path / "out", tmp_path / "cache"
    script = DRIVER.read_text().replace('methods=["memit", "alphaedit_blue"]', "methods=[METHOD]")
    procs = []
    for m in ("memit", "alphaedit_blue"):
        src = script.replace("METHOD", repr(m))
        procs.append(subprocess.Popen([sys.executable, "-c", src, str(out)], env=_env(cache),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    run = load_run(out)
    assert set(run.methods) == {"memit", "alphaedit_blue"} and all(r.finished for r in run.methods.values())
    assert run.unedited is not None and run.unedited["records"] == 6
    for m in run.methods:
        json.loads((out / m / "summary.json").read_text())         # complete, valid JSON
    # the same numbers as one process running both methods after each other
    alone = subprocess.run([sys.executable, str(DRIVER), str(tmp_path / "alone")], env=_env(tmp_path / "c2"),
                           capture_output=True, text=True, timeout=900)
    assert alone.returncode == 0, alone.stderr[-1500:]
    solo = load_run(tmp_path / "alone")
    for m in run.methods:
        for k in run.methods[m].points:
            assert run.methods[m].evals[k]["columns"] == solo.methods[m].evals[k]["columns"], (m, k)
            assert run.methods[m].evals[k]["ability"]["perplexity"] == solo.methods[m].evals[k]["ability"]["perplexity"]
