"""Reading a sequential run folder, finished or not: metric-versus-edits curves, paired BLUE-minus-base
differences, the paper-layout table at the largest size every method reached, and the export of the
files worth committing.

A run folder is what :func:`bluebook.experiments.replicate.replicate` writes (``<method>/progress.json``,
``<method>/evals/edits_*.json``, ``unedited/evals/edits_00000.json``, ``invocations.jsonl``). A run
that was stopped is read as far as it got: :func:`load_run` reports the batches done and the
evaluation points reached per method, and nothing here extrapolates beyond them.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from bluebook.core.names import is_blue_pair, split_method
from bluebook.experiments.tables import COLUMNS, UNEDITED, ordered
from bluebook.metrics.intervals import interval, paired_difference
from bluebook.runs import atomic_write_text, read_jsonl, write_json

__all__ = ["MethodRun", "Run", "load_run", "equal_total_run", "EQUAL_TOTAL_SUFFIX", "curve_rows",
           "pair_differences", "table_at", "export_run", "sittings", "COMMITTED"]

#: Files of a run folder that are results (committed); weights, states, snapshots and the full
#: per-case dumps (``cases.json``, with generated texts) are not.
COMMITTED = ("progress.json", "summary.json", "ability_reference.json", "evals/*.json")
#: ``<run><suffix>``: the folder of a run's base methods again at an equal total v* budget
EQUAL_TOTAL_SUFFIX = "_equal_total"


@dataclass
class MethodRun:
    """One method's part of a run folder: its batch log and evaluation points (with columns)."""
    name: str
    batches: list = field(default_factory=list)
    n_batches: int | None = None
    evals: dict = field(default_factory=dict)          # edits -> evaluation record
    config: dict = field(default_factory=dict)         # the run configuration its progress.json records
    folder: Path | None = None                         # where its files are (another run's when borrowed)

    @property
    def batches_done(self) -> int:
        return len(self.batches)

    @property
    def edits_done(self) -> int:
        return sum(len(b["case_ids"]) for b in self.batches)

    @property
    def finished(self) -> bool:
        return self.n_batches is not None and self.batches_done == self.n_batches

    @property
    def points(self) -> list[int]:
        return sorted(self.evals)


@dataclass
class Run:
    folder: Path
    dataset: str
    config: dict
    methods: dict                                      # name -> MethodRun (without the unedited row)
    unedited: dict | None                              # the evaluation at 0 edits (all records)
    invocations: list
    borrowed: dict = field(default_factory=dict)       # method -> the run folder its column comes from

    def common_points(self, names=None) -> list[int]:
        """Evaluation points every one of ``names`` (default: all methods) has reached."""
        runs = [self.methods[m] for m in (names or self.methods)]
        if not runs:
            return []
        return sorted(set.intersection(*(set(r.points) for r in runs)))


def step_cap(config: dict) -> int | None:
    """The v* step cap of one optimisation in a run configuration (``progress.json``'s ``config``)."""
    target = (config.get("resolved_config") or {}).get("target") or {}
    return int(target["steps"]) if "steps" in target else None


def _read(path: Path):
    return json.loads(path.read_text())


def load_run(folder: str | Path) -> Run:
    """Everything on disk in ``folder``; raises when it holds no run."""
    folder = Path(folder)
    methods, cfg = {}, None
    for prog_file in sorted(folder.glob("*/progress.json")):
        name = prog_file.parent.name
        if name == UNEDITED:
            continue
        prog = _read(prog_file)
        cfg = cfg or prog["config"]
        mr = MethodRun(name, batches=prog.get("batches", []), n_batches=prog.get("n_batches"),
                       config=prog["config"], folder=prog_file.parent)
        for e in sorted((prog_file.parent / "evals").glob("edits_*.json")):
            rec = _read(e)
            mr.evals[int(rec["edits"])] = rec
        methods[name] = mr
    ufile = folder / UNEDITED / "evals" / "edits_00000.json"
    unedited = _read(ufile) if ufile.exists() else None
    if cfg is None and unedited is None:
        raise ValueError(f"{folder} holds no sequential run (no <method>/progress.json)")
    invocations = read_jsonl(folder / "invocations.jsonl")
    dataset = (cfg or {}).get("dataset") or unedited["eval_config"]["dataset"]
    return Run(folder, dataset, cfg or {}, {m: methods[m] for m in ordered(list(methods))}, unedited, invocations)


def _borrowable(base: MethodRun, blue: MethodRun) -> list[str]:
    """What keeps ``blue`` (from a same-cap run) from being the column an equal-total run of
    ``base`` would have computed beside it: empty when nothing does."""
    why = [f"{k}: {blue.name} {blue.config.get(k)!r} vs {base.name} {base.config.get(k)!r}"
           for k in ("dataset", "n", "batch", "model_fingerprint") if blue.config.get(k) != base.config.get(k)]
    if list(blue.config.get("case_ids") or []) != list(base.config.get("case_ids") or []):
        why.append("case_ids: the two were run on different records")
    cap_base, cap_blue = step_cap(base.config), step_cap(blue.config)
    if cap_base is None or cap_blue is None or cap_base != 2 * cap_blue:
        why.append(f"target.steps: {blue.name} {cap_blue} per optimisation, {base.name} {cap_base}; an equal "
                   f"total needs the base's cap to be twice BLUE's")
    a = json.loads(json.dumps(base.config.get("resolved_config") or {}))
    b = json.loads(json.dumps(blue.config.get("resolved_config") or {}))
    a.get("target", {}).pop("steps", None)
    b.get("target", {}).pop("steps", None)
    for k in sorted(set(a) | set(b)):
        if k == "target":
            why += [f"target.{t}: {blue.name} {b['target'].get(t)!r} vs {base.name} {a['target'].get(t)!r}"
                    for t in sorted(set(a.get("target", {})) | set(b.get("target", {})))
                    if a.get("target", {}).get(t) != b.get("target", {}).get(t)]
        elif k != "long_overrides" and a.get(k) != b.get(k):
            why.append(f"{k}: {blue.name} {b.get(k)!r} vs {base.name} {a.get(k)!r}")
    for k in sorted(set(base.evals) & set(blue.evals)):
        if base.evals[k].get("eval_config") != blue.evals[k].get("eval_config"):
            why.append(f"the evaluation configuration at {k} edits differs")
        if (base.evals[k].get("ability") or {}).get("config") != (blue.evals[k].get("ability") or {}).get("config"):
            why.append(f"the general-ability configuration at {k} edits differs")
    return why


def equal_total_run(fair: Run, same_cap: Run) -> Run:
    """The BLUE-versus-base comparison at an equal total v* budget, from a run of the base methods
    alone (``replicate --budget equal_total``: the base's one optimisation gets ``2·steps``) and the
    BLUE columns of a same-cap run (``steps`` per optimisation).

    Under the equal-total rule BLUE's two optimisations get ``steps`` each, which is exactly what
    the same-cap rule gave them; so where the BLUE column's resolved configuration is the fair
    base's with its cap halved, on the same records, batches, model and evaluation, that column is
    the one an equal-total run would compute (the same computation), and it is reused instead of
    run again. A BLUE column ``fair`` has itself is kept. Returns ``fair`` with the borrowed columns
    added (``Run.borrowed`` names where each came from, and its unedited row when ``fair`` has
    none); raises ``ValueError`` naming every field that differs."""
    methods, borrowed = dict(fair.methods), {}
    for name, mr in fair.methods.items():
        _, base, blue = split_method(name)
        variant = f"{base}_blue"
        if blue or name != base or variant in fair.methods:
            continue
        if variant not in same_cap.methods:
            continue
        why = _borrowable(mr, same_cap.methods[variant])
        if why:
            raise ValueError(f"{variant} of {same_cap.folder} is not the column an equal-total run of {base} in "
                             f"{fair.folder} would compute: " + "; ".join(why))
        methods[variant] = same_cap.methods[variant]
        borrowed[variant] = same_cap.folder.name
    unedited = fair.unedited
    if unedited is None and same_cap.unedited is not None:
        ids = next(iter(fair.methods.values())).config.get("case_ids") if fair.methods else None
        if ids is not None and list(same_cap.unedited["columns"]["case_id"][:len(ids)]) != list(ids):
            raise ValueError(f"the unedited row of {same_cap.folder} was scored on other records than {fair.folder}")
        unedited, borrowed[UNEDITED] = same_cap.unedited, same_cap.folder.name
    return Run(fair.folder, fair.dataset, fair.config, {m: methods[m] for m in ordered(list(methods))}, unedited,
               fair.invocations, borrowed)


def _baseline(run: Run, k: int, metric: str):
    """The unedited model on the first ``k`` records (same records as a method's point at k)."""
    if run.unedited is None or metric not in run.unedited["columns"]:
        return None
    vals = run.unedited["columns"][metric][:k]
    return interval(vals, scale=100.0) if any(v is not None for v in vals) else None


def curve_rows(run: Run, metrics=None) -> list[dict]:  # noqa: C901 - one row per method and evaluation point, with the optional columns
    """Long-format rows ``{method, edits, metric, value, low, high, n}`` for every method's points,
    the unedited model on the same records (method ``"unedited"``) and the general-ability numbers
    (metrics ``"ability:<name>"``; perplexity is not ×100)."""
    metrics = list(metrics or COLUMNS[run.dataset])
    rows = []
    for name, mr in run.methods.items():
        for k in mr.points:
            rec = mr.evals[k]
            for m in metrics:
                iv = rec["intervals"].get(m)
                if iv:
                    rows.append({"method": name, "edits": k, "metric": m,
                                 **{x: iv[x] for x in ("value", "low", "high", "n")}})
            for m, v in _ability_values(rec.get("ability")).items():
                rows.append({"method": name, "edits": k, "metric": f"ability:{m}", **v})
    ks = sorted({r["edits"] for r in rows})
    for k in ks:
        for m in metrics:
            b = _baseline(run, k, m)
            if b is not None:
                rows.append({"method": UNEDITED, "edits": k, "metric": m, "value": b.value, "low": b.low,
                             "high": b.high, "n": b.n})
    if run.unedited is not None:
        for m, v in _ability_values(run.unedited.get("ability")).items():
            rows.append({"method": UNEDITED, "edits": 0, "metric": f"ability:{m}", **v})
    return rows


def _ability_values(ab: dict | None) -> dict:
    if not ab:
        return {}
    out = {}
    if "perplexity" in ab:
        p = ab["perplexity"]
        out["perplexity"] = {"value": p["value"], "low": p["low"], "high": p["high"], "n": p["n_texts"]}
    if "known_facts" in ab:
        k = ab["known_facts"]
        out["known_facts"] = {x: (100 * k[x] if x != "n" else k[x]) for x in ("value", "low", "high", "n")}
    for name, pr in (ab.get("probes") or {}).items():
        a = pr["accuracy"]
        out[f"{name}_accuracy"] = {x: (100 * a[x] if x != "n" else a[x]) for x in ("value", "low", "high", "n")}
        out[f"{name}_mcc"] = {"value": pr["mcc"]["value"], "low": pr["mcc"]["low"], "high": pr["mcc"]["high"],
                              "n": pr["n"]}
    return out


def pair_differences(run: Run, k: int, metrics=None) -> dict:
    """``{base: {metric: Estimate-dict}}``: BLUE minus its base at ``k`` edits on the same records
    (paired bootstrap), for every base whose BLUE variant and itself both reached ``k``."""
    metrics = list(metrics or COLUMNS[run.dataset])
    out = {}
    for name, mr in run.methods.items():
        _, base, _ = split_method(name)
        if (not is_blue_pair(name, base) or base not in run.methods or k not in mr.evals
                or k not in run.methods[base].evals):
            continue
        a, b = mr.evals[k]["columns"], run.methods[base].evals[k]["columns"]
        if a["case_id"] != b["case_id"]:
            raise ValueError(f"{name} and {base} were evaluated on different records at {k} edits")
        out[base] = {m: paired_difference(a[m], b[m], scale=100.0).as_dict(digits=2)
                     for m in metrics if m in a and m in b}
    return out


def table_at(run: Run, k: int | None = None) -> dict:
    """``{"edits": k, "rows": {method: {metric: value}}}`` at ``k`` edits (default: the largest
    point every method reached), with the unedited model on the same records."""
    pts = run.common_points()
    if k is None:
        if not pts:
            raise ValueError(f"no evaluation point is shared by all methods of {run.folder}")
        k = pts[-1]
    rows = {}
    for m in COLUMNS[run.dataset]:
        b = _baseline(run, k, m)
        if b is not None:
            rows.setdefault(UNEDITED, {})[m] = round(b.value, 2)
    for name, mr in run.methods.items():
        if k in mr.evals:
            s = mr.evals[k]["summary"]
            rows[name] = {m: s.get(m) for m in COLUMNS[run.dataset]}
    return {"edits": k, "rows": rows}


def _portable_command(command: str, folder: Path) -> str:
    for form in {str(folder), str(folder.resolve())}:
        command = command.replace(form, f"$RUNS/{folder.name}")
    return command


def sittings(run: Run) -> list[dict]:
    """One row per CLI invocation that worked on ``run``: its command, commit, machine, start, end,
    wall time and how it ended (start and end events joined by process id; an invocation still
    running, or killed without a trace, has no end)."""
    rows = []
    for n, i in enumerate(run.invocations):
        if i.get("event") == "start":
            e = next((j for j in run.invocations[n + 1:] if j.get("event") == "end" and j.get("pid") == i.get("pid")),
                     {})
            rows.append({"command": i.get("command"), "commit": i.get("commit"), "machine": i.get("machine"),
                         "started": i.get("started"), "ended": e.get("ended"), "wall_s": e.get("wall_s"),
                         "status": e.get("status")})
    return rows


def export_run(src: str | Path, dst: str | Path) -> list[Path]:
    """Copy the result files of run folder ``src`` (:data:`COMMITTED`, plus ``invocations.jsonl``)
    to ``dst`` and write ``dst/status.json`` (how far each method got). Returns the files written."""
    src, dst = Path(src), Path(dst)
    run = load_run(src)
    written = []
    for sub in sorted(p for p in src.iterdir() if p.is_dir()):
        for pattern in COMMITTED:
            for f in sorted(sub.glob(pattern)):
                target = dst / f.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, target)
                written.append(target)
    if (src / "invocations.jsonl").exists():
        # the commands name the run folder by its absolute path on the machine that ran them; the
        # committed copy names it as the recording script does ($RUNS/<folder name>)
        lines = []
        for rec in read_jsonl(src / "invocations.jsonl"):
            if "command" in rec:
                rec["command"] = _portable_command(rec["command"], src)
            lines.append(json.dumps(rec))
        atomic_write_text(dst / "invocations.jsonl", "\n".join(lines) + "\n")
        written.append(dst / "invocations.jsonl")
    status = {"dataset": run.dataset, "n": run.config.get("n"), "batch": run.config.get("batch"),
              "methods": {m: {"batches_done": r.batches_done, "n_batches": r.n_batches, "edits_done": r.edits_done,
                              "finished": r.finished, "evaluated_at": r.points,
                              "edit_seconds": round(sum(b["seconds"] for b in r.batches), 1)}
                          for m, r in run.methods.items()},
              "unedited_evaluated": run.unedited is not None}
    written.append(write_json(dst / "status.json", status))
    return written
