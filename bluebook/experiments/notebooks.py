"""Execute the notebook sequence with papermill and gather an index of their headline numbers."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import yaml

from bluebook.experiments.scorecard import GROUPS, report_lines
from bluebook.experiments.verdicts import claim_name, recorded_comparisons
from bluebook.metrics.claims import SMALL_SAMPLE
from bluebook.runs import atomic_write_text, machine_info, source_commit, write_json


def notebook_dir() -> Path:
    here = Path(__file__).resolve().parents[2] / "notebooks"
    if not here.is_dir():
        raise FileNotFoundError(f"notebooks folder not found at {here} (run from a source checkout)")
    return here


def list_notebooks(directory: Path | None = None) -> list[Path]:
    d = directory or notebook_dir()
    return sorted(p for p in d.glob("[0-9][0-9]_*.ipynb"))


def profile_parameters(path: Path, profile: str = "ci", parameters: dict | None = None) -> dict:
    """The papermill parameters a notebook runs with: on ``"full"``, those of
    ``notebooks/params/full/<stem>.yaml``, then ``parameters`` over them (``"ci"``: the notebook's own
    defaults, then ``parameters``)."""
    path = Path(path)
    params = {}
    if profile == "full":
        y = path.parent / "params" / "full" / f"{path.stem}.yaml"
        if y.exists():
            params.update(yaml.safe_load(y.read_text()) or {})
    elif profile != "ci":
        raise ValueError(f"profile must be 'ci' or 'full', got {profile!r}")
    params.update(parameters or {})
    return params


def run_notebook(path: Path, out_dir: Path, parameters: dict | None = None, profile: str = "ci",
                 timeout: int = 3600, kernel: str = "python3") -> dict:
    """Run one notebook into ``out_dir/<stem>/`` and return its ``metrics.json`` (as a dict).

    ``profile="full"`` loads ``notebooks/params/full/<stem>.yaml`` as parameters.
    """
    import papermill as pm  # deferred: an optional package (the notebooks extra), ~1.8 s to import

    path = Path(path)
    target = Path(out_dir) / path.stem
    target.mkdir(parents=True, exist_ok=True)
    params = profile_parameters(path, profile, parameters)
    params["output_dir"] = str(target.resolve())
    if "interactive" in pm.inspect_notebook(str(path)):
        params.setdefault("interactive", False)      # no browser attached: forms would show as text
    pm.execute_notebook(str(path), str(target / path.name), parameters=params, kernel_name=kernel,
                        cwd=str(path.parent), execution_timeout=timeout, progress_bar=False)
    mfile = target / "metrics.json"
    if not mfile.exists():
        raise RuntimeError(f"{path.name} finished without writing metrics.json")
    return json.loads(mfile.read_text())


def _fmt(v, digits: int = 3) -> str:
    """A number as a reader wants it: at most ``digits`` significant decimals, no float noise."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v:
            return "nan"
        a = abs(v)
        if a >= 100:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.2f}"
        return f"{v:.{digits}f}" if a >= 10 ** -digits or v == 0 else f"{v:.1e}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x, digits) for x in v) + "]"
    return str(v)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def export_html(executed: Path) -> Path:
    """An HTML copy of an executed notebook beside it (nbconvert's lab template, outputs kept)."""
    # deferred: optional packages (the notebooks extra), ~1.5 s to import
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed), as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    target = Path(executed).with_suffix(".html")
    atomic_write_text(target, body)
    return target


def _figures(folder: Path) -> list[Path]:
    """The figures a notebook saved, in the order it saved them."""
    figs = folder / "figures"
    return sorted(figs.glob("*.png"), key=lambda f: (f.stat().st_mtime_ns, f.name)) if figs.exists() else []


def group_figures(out: Path, index: dict) -> dict[str, list[str]]:
    """Per group of the scorecard, the first figure of its first notebook that drew one (a path
    relative to ``out``)."""
    figures = {}
    for name, stems in GROUPS:
        for stem in index:
            figs = _figures(out / stem) if stem[:2] in stems else []
            if figs:
                figures[name] = [f"{stem}/figures/{figs[0].name}"]
                break
    return figures


def write_report(out: Path, index: dict, profile: str = "ci") -> Path:
    """``out/README.md``: the scorecard first (one verdict per claim, grouped by the paper's argument,
    :mod:`bluebook.experiments.scorecard`), then each notebook's figures in order, its time and links
    to the executed notebook and its HTML export."""
    total = sum(i["seconds"] for i in index.values())
    mach = machine_info()
    lines = ["# bluebook results", "",
             f"Profile `{profile}`, {len(index)} notebooks in {total / 60:.1f} min on {mach.get('cores')} cores "
             f"({mach.get('cpu')}, torch {mach.get('torch')}, {'CUDA' if mach.get('cuda') else 'CPU'}), commit "
             f"`{str(source_commit())[:12]}`, {time.strftime('%Y-%m-%d %H:%M %Z')}.", "",
             "Each claim of the paper that a notebook tests, once, with our number, its 95 % interval and the "
             "verdict read off that interval, from the strongest fair evidence: an equal v* budget before another, "
             "then more records, then a recorded run before this run's (*live*) one. Other measurements of the "
             "same claim stand beside it as context. Δ marks a difference (BLUE minus its base, direct minus "
             "distributed, ...).", "",
             "## Scorecard", ""]
    lines += report_lines(index, group_figures(out, index))
    lines += ["", "## Notebooks", ""]
    for stem, info in index.items():
        folder = out / stem
        html = folder / f"{stem}.html"
        links = f"[notebook]({stem}/{stem}.ipynb)" + (f" · [HTML]({stem}/{stem}.html)" if html.exists() else "")
        lines += [f"### {stem} ({info['seconds']:.0f} s)", "", links, ""]
        lines += [f"![{f.stem}]({stem}/figures/{f.name})" for f in _figures(folder)] + [""]
    target = out / "README.md"
    atomic_write_text(target, "\n".join(lines) + "\n")
    return target


def run_all(out_dir: str | Path = "outputs", names: list[str] | None = None, profile: str = "ci",
            html: bool = True) -> dict:
    """Run every numbered notebook (or ``names``) in order, printing each one's progress and time;
    export each to HTML (``html``), write ``outputs/index.json`` and the report ``outputs/README.md``
    (:func:`write_report`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    books = list_notebooks()
    if names:
        books = [b for b in books if b.stem in names or b.name in names or b.stem[:2] in names]
    index = {}
    t_all = time.time()
    for i, nb in enumerate(books, 1):
        t0 = time.time()
        print(f"[bluebook] {i}/{len(books)} {nb.name} ...", flush=True)
        m = run_notebook(nb, out, profile=profile)
        if html:
            export_html(out / nb.stem / nb.name)
        index[nb.stem] = {"seconds": round(time.time() - t0, 1), "metrics": m}
        n_claims = len(m.get("claims") or {})
        print(f"[bluebook] {i}/{len(books)} {nb.name} done in {time.time() - t0:.0f} s"
              + (f", {n_claims} claims" if n_claims else "") + f" (total {(time.time() - t_all) / 60:.1f} min)",
              flush=True)
        write_json(out / "index.json", index)
    write_report(out, index, profile)
    return index


# --------------------------------------------------------------------------------------------
# the recorded tier of a notebook: one committed run of its full profile

RECORDED_DIR = Path(__file__).resolve().parents[2] / "results" / "notebooks"


def record_notebook(name: str, root: str | Path | None = None, profile: str = "full",
                    parameters: dict | None = None) -> Path:
    """Run one notebook on its ``profile`` (default: the full one) into ``root/<stem>/`` (default
    ``results/notebooks/``) and keep what its recorded tier needs: ``metrics.json`` and
    ``provenance.json`` (command, commit, start, end, machine, wall time, profile, parameters).
    The executed notebook and figures stay there too, for reading; commit the two JSON files."""
    books = [b for b in list_notebooks() if name in (b.stem, b.name, b.stem[:2])]
    if len(books) != 1:
        raise ValueError(f"name must pick one notebook (a stem or its number), got {name!r}")
    nb = books[0]
    root = Path(root) if root is not None else RECORDED_DIR
    commit, started, t0 = source_commit(), time.strftime("%Y-%m-%d %H:%M:%S %Z"), time.time()
    run_notebook(nb, root, parameters=parameters, profile=profile)
    overrides = "".join(f" -p {k}={json.dumps(v)}" for k, v in (parameters or {}).items())
    prov = {"command": f"python -m bluebook record-notebook {nb.stem[:2]} --profile {profile}{overrides}",
            "commit": commit,
            "started": started, "ended": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "wall_s": round(time.time() - t0, 1), "machine": machine_info(), "profile": profile,
            "parameters": parameters or {},
            # everything the run was given beyond the notebook's own defaults (the profile file, then -p)
            "resolved_parameters": profile_parameters(nb, profile, parameters)}
    return write_json(root / nb.stem / "provenance.json", prov)


def recorded_claims(stem: str, root: str | Path | None = None) -> dict:
    """The claims of a notebook's recorded full-profile run (:func:`record_notebook`), as the
    *recorded* tier: ``{name: claim}`` with ``evidence="recorded"`` and the run's provenance in each
    note; ``{}`` when no run is committed."""
    folder = (Path(root) if root is not None else RECORDED_DIR) / stem
    mfile, pfile = folder / "metrics.json", folder / "provenance.json"
    if not (mfile.exists() and pfile.exists()):
        return {}
    prov = json.loads(pfile.read_text())
    mach = prov.get("machine") or {}
    given = ", ".join(f"{k}={json.dumps(v)}" for k, v in (prov.get("parameters") or {}).items())
    where = (f"recorded: {prov.get('profile')} profile{' with ' + given if given else ''}, {prov.get('started')}, "
             f"commit {str(prov.get('commit'))[:10]}, "
             f"{mach.get('cores')} cores {mach.get('cpu')}{' + ' + mach['cuda'] if mach.get('cuda') else ''}, "
             f"{prov.get('wall_s')} s")
    out = {}
    for name, c in (json.loads(mfile.read_text()).get("claims") or {}).items():
        src = c["live"] if isinstance(c.get("live"), dict) else c      # that run's own measurement
        c = {k: v for k, v in src.items() if k not in ("live", "recorded")}
        c["evidence"] = "recorded"
        own = re.sub(r"^small live sample \(n=\d+\): illustrates the computation, not the paper's effect size(; )?",
                     "", c.get("note") or "")
        if c.get("n") is not None and c["n"] < SMALL_SAMPLE:
            own = f"small sample (n={c['n']}){'; ' + own if own else ''}"
        c["note"] = where + (f"; {own}" if own else "")
        out[name] = c
    return out


def recorded_index(results_root: str | Path | None = None) -> dict:
    """The committed recorded evidence as a notebook index (``{stem: {"metrics": {"claims": …}}}``)
    for :mod:`bluebook.experiments.scorecard`: each recorded notebook run's claims, and the
    BLUE-versus-base comparisons of the recorded sequential runs under both v* budget rules (drawn
    by notebook 09)."""
    root = Path(results_root) if results_root is not None else RECORDED_DIR.parent
    index = {}
    for folder in sorted(p for p in (root / "notebooks").glob("[0-9][0-9]_*") if p.is_dir()):
        claims = recorded_claims(folder.name, root / "notebooks")
        if claims:
            index[folder.name] = {"metrics": {"claims": claims}}
    seq = {}
    for row in recorded_comparisons(root / "sequential"):
        fair = (row.get("rule") or "").startswith("equal total")
        for metric, c in row["claims"].items():
            if c.get("ours") is not None:
                seq[claim_name(row["dataset"], row["base"], metric) + ("_equal_total" if fair else "")] = c
    if seq:
        index["09_sequential_curves"] = {"metrics": {"claims": seq}}
    return index

