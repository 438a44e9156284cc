"""Run plumbing: seeds, atomic writes of result files and caches, JSON of tensors and arrays."""
from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np
import psutil
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def jsonable(x):
    """``x`` with tensors, arrays and numpy scalars as plain Python; NaN/inf as None (valid JSON)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return jsonable(x.detach().cpu().tolist())
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return None
    return x


def write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(jsonable(obj), indent=2, sort_keys=False) + "\n")


def write_metrics(output_dir: str | Path, metrics: dict) -> Path:
    """Write ``metrics.json`` atomically into ``output_dir`` (created if needed)."""
    return write_json(Path(output_dir) / "metrics.json", metrics)


def cache_root() -> Path:
    """Root of bluebook's disk caches: ``$BLUEBOOK_CACHE`` or ``~/.cache/bluebook``."""
    root = os.environ.get("BLUEBOOK_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "bluebook"


@contextlib.contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` (a rename), on
    error it is removed, so ``path`` is never left half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class PeakMemory:
    """Peak memory of a block: the process's resident set (sampled every ``interval`` s by a
    background thread, with ``psutil``) and, on CUDA, ``torch.cuda.max_memory_allocated``.

    ``with PeakMemory() as pm: ...`` then ``pm.result()`` -> ``{"peak_rss_mb", "start_rss_mb",
    ["peak_cuda_mb"]}``. Sampling can miss a spike shorter than ``interval``; the RSS at the start
    and end of the block is always included."""

    def __init__(self, interval: float = 0.05):
        self.interval = float(interval)
        self._peak = 0
        self._start = 0
        self._stop = None
        self._thread = None
        self._cuda = False

    def _sample(self) -> None:
        proc = psutil.Process()
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, proc.memory_info().rss)

    def __enter__(self) -> "PeakMemory":
        self._start = self._peak = psutil.Process().memory_info().rss
        self._cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        if self._cuda:
            torch.cuda.reset_peak_memory_stats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, psutil.Process().memory_info().rss)

    def result(self) -> dict:
        out = {"peak_rss_mb": round(self._peak / 2**20, 1), "start_rss_mb": round(self._start / 2**20, 1)}
        if self._cuda:
            out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return out


def machine_info() -> dict:
    """The machine a number was measured on: CPU, cores, memory, torch threads, GPU, versions."""
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        import transformers  # deferred: ~0.7 s, and the lowest layer must import without it
        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def source_commit(path: str | Path | None = None) -> str | None:
    """The git commit of the bluebook source tree (with ``+dirty`` when it has uncommitted changes),
    or None outside a git checkout."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSON-lines file written by :func:`append_jsonl`; ``[]`` when it does not
    exist. A last line that is cut short (no newline, not valid JSON: a process killed inside its
    one ``write``) is ignored; a malformed line anywhere else raises ``ValueError`` naming the file
    and the line, since that is damage rather than an interrupted append."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines):  # the last line, without its newline: an append cut short
                break
            raise ValueError(f"{path}: line {i} is not valid JSON ({e.msg})") from None
    return rows


def append_jsonl(path: str | Path, obj) -> None:
    """Append one JSON line to ``path`` (one ``write`` of a whole line, so concurrent appenders do
    not interleave within a line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(jsonable(obj)) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
