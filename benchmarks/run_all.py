"""Run every benchmark in sequence (``make bench``); each writes benchmarks/results/<name>.json."""
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SCRIPTS = [["bench_targets.py", "--sizes", "10", "50", "100"], ["bench_stats.py"],
           ["bench_edits.py", "--batch", "20", "100"],
           ["bench_notebooks.py"]]

if __name__ == "__main__":
    for args in SCRIPTS:
        print("==>", " ".join(args), flush=True)
        subprocess.run([sys.executable, str(HERE / args[0]), *args[1:]], check=True, cwd=HERE)
