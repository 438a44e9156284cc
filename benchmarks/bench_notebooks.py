"""Wall time of the whole CI-profile notebook suite: the main job's command
(``python -m bluebook run-notebooks``) run as a subprocess into a temporary folder, timed per
notebook (from its ``index.json``) and in total, with the peak RSS of the notebook kernels.

Usage: python benchmarks/bench_notebooks.py [--only 00 03] [--profile ci]
Uses torch's default thread count unless OMP_NUM_THREADS is set (the 20-minute goal is for 2 cores).
"""
import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--profile", default="ci", choices=["ci", "full"])
    args = ap.parse_args()
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="bluebook-nb-bench-") as tmp:
        cmd = [sys.executable, "-m", "bluebook", "run-notebooks", "--out", tmp, "--profile", args.profile]
        if args.only:
            cmd += ["--only", *args.only]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=root)
        wall = time.perf_counter() - t0
        index = json.loads((Path(tmp) / "index.json").read_text())
    seconds = {stem: info["seconds"] for stem, info in index.items()}
    out = {"profile": args.profile, "command": " ".join(["python"] + cmd[1:4] + ["--out", "DIR"] + cmd[6:]),
           "wall_s": wall, "notebooks_s": seconds, "notebooks_total_s": sum(seconds.values()),
           # the largest peak RSS of any finished child process (the kernels), not their sum
           "children_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    print(json.dumps(out, indent=1))
    print("wrote", write("notebooks", out))


if __name__ == "__main__":
    main()
