"""Execute the notebook sequence with papermill and gather an index of their headline numbers."""
from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from bluebook.runs import atomic_write_text, write_json


def notebook_dir() -> Path:
    here = Path(__file__).resolve().parents[2] / "notebooks"
    if not here.is_dir():
        raise FileNotFoundError(f"notebooks folder not found at {here} (run from a source checkout)")
    return here


def list_notebooks(directory: Path | None = None) -> list[Path]:
    d = directory or notebook_dir()
    return sorted(p for p in d.glob("[0-9][0-9]_*.ipynb"))


def run_notebook(path: Path, out_dir: Path, parameters: dict | None = None, profile: str = "ci",
                 timeout: int = 3600, kernel: str = "python3") -> dict:
    """Run one notebook into ``out_dir/<stem>/`` and return its ``metrics.json`` (as a dict).

    ``profile="full"`` loads ``notebooks/params/full/<stem>.yaml`` as parameters.
    """
    import papermill as pm

    path = Path(path)
    target = Path(out_dir) / path.stem
    target.mkdir(parents=True, exist_ok=True)
    params = {}
    if profile == "full":
        y = path.parent / "params" / "full" / f"{path.stem}.yaml"
        if y.exists():
            params.update(yaml.safe_load(y.read_text()) or {})
    elif profile != "ci":
        raise ValueError(f"profile must be 'ci' or 'full', got {profile!r}")
    params.update(parameters or {})
    params["output_dir"] = str(target.resolve())
    pm.execute_notebook(str(path), str(target / path.name), parameters=params, kernel_name=kernel,
                        cwd=str(path.parent), execution_timeout=timeout, progress_bar=False)
    mfile = target / "metrics.json"
    if not mfile.exists():
        raise RuntimeError(f"{path.name} finished without writing metrics.json")
    return json.loads(mfile.read_text())


def _headline(metrics: dict, limit: int = 12) -> list[tuple[str, object]]:
    out = []
    for k, v in metrics.items():
        if isinstance(v, (int, float, str, bool)) or v is None:
            out.append((k, v))
        if len(out) >= limit:
            break
    return out


def run_all(out_dir: str | Path = "outputs", names: list[str] | None = None, profile: str = "ci") -> dict:
    """Run every numbered notebook (or ``names``) in order; write ``outputs/index.json`` and
    ``outputs/README.md`` with each notebook's headline numbers and figures."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    books = list_notebooks()
    if names:
        books = [b for b in books if b.stem in names or b.name in names or b.stem[:2] in names]
    index = {}
    for nb in books:
        t0 = time.time()
        print(f"[bluebook] running {nb.name} ...", flush=True)
        m = run_notebook(nb, out, profile=profile)
        index[nb.stem] = {"seconds": round(time.time() - t0, 1), "metrics": m}
        write_json(out / "index.json", index)
    lines = ["# bluebook outputs", "", f"Profile: `{profile}`. Each folder holds the executed notebook, "
             "`metrics.json` and `figures/`.", ""]
    for stem, info in index.items():
        lines += [f"## {stem} ({info['seconds']} s)", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in _headline(info["metrics"])]
        figs = sorted((out / stem / "figures").glob("*.png")) if (out / stem / "figures").exists() else []
        lines += [""] + [f"![{f.stem}]({stem}/figures/{f.name})" for f in figs] + [""]
        table = out / stem / "results.md"
        if table.exists():
            lines += [table.read_text(), ""]
    atomic_write_text(out / "README.md", "\n".join(lines) + "\n")
    return index
