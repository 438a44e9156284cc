"""Long-form editing runs: one paragraph-long edit at a time, scored against its target.

:func:`run_longform` follows the long-form protocol of the literature: every record is edited on
its own (one edit per run, the weights restored in between), the edited model's greedy
continuations of the edit prompt and of a question-style paraphrase are scored against the target
(:mod:`bluebook.metrics.longform`), and prompts about unrelated subjects measure locality. The
unedited model's continuations are the "before" row (method ``"none"``).

Rows are appended to ``<out>/rows.jsonl`` as they are computed, one per (record, method); a rerun
with the same configuration skips the rows already there, so an interrupted run resumes where it
stopped and ends with the same rows. :func:`summarize_longform` turns the rows into means with
bootstrap intervals and paired BLUE-minus-base differences.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from bluebook.core.config import EditConfig, long_form_config, with_overrides
from bluebook.core.methods import parse_method
from bluebook.core.names import for_method, is_blue_pair, split_method
from bluebook.editor.loop import edit, prepare_stats, resolve_config
from bluebook.experiments.verdicts import budget_rule
from bluebook.metrics.claims import SMALL_SAMPLE, claim
from bluebook.metrics.intervals import bootstrap_mean, interval, paired_difference
from bluebook.metrics.longform import (
    TEXT_METRICS,
    cosine,
    embed_texts,
    greedy_continuations,
    locality_scores,
    text_scores,
)
from bluebook.runs import append_jsonl, jsonable, read_jsonl, write_json

__all__ = ["LONGFORM_METHODS", "SCORED", "REPRODUCED", "run_longform", "read_rows", "read_run", "summarize_longform",
           "longform_claims", "export_longform_run"]

LONGFORM_METHODS = ("memit", "memit_blue", "alphaedit", "alphaedit_blue")
SCORED = (*TEXT_METRICS, "similarity")
"""Per prompt kind (``prompt``, ``paraphrase``): the text metrics and the embedded-scorer similarity."""
REPRODUCED = 0.5
"""ROUGE-L against the target at which a greedy answer counts as reproducing most of it: the
summary's ``<kind>.reproduced`` is the share of records at or above it (Wilson interval)."""


def _budget(tok, req, max_new_tokens) -> int:
    n = len(tok(req.new_text, add_special_tokens=False)["input_ids"])
    return n if max_new_tokens is None else int(max_new_tokens)


def read_rows(path: str | Path) -> list[dict]:
    """The rows of a ``rows.jsonl`` (:func:`bluebook.runs.read_jsonl`: a last line cut short by a
    crash is ignored, a damaged line elsewhere raises)."""
    return read_jsonl(path)


def read_run(folder: str | Path) -> tuple[list[dict], list[dict]]:
    """The rows and the provenance entries (``invocations.jsonl``) of a recorded run: the folder's own
    files and those of its sub-folders (one per process, e.g. one per base/BLUE pair). A row repeated
    across sub-folders (the unedited model's, computed by each process) is kept once."""
    folder = Path(folder)
    rows, seen, inv = [], set(), []
    for d in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())] if folder.exists() else []:
        caps = _config_caps(d / "config.json")
        for r in read_rows(d / "rows.jsonl"):
            key = (r["case_id"], r["method"])
            if key not in seen:
                seen.add(key)
                if r["method"] != "none" and "steps_cap" not in r and r["method"] in caps:
                    # rows written before rows carried their cap: the one their edit ran with
                    r["steps_cap"] = caps[r["method"]][1 if r.get("windows", 1) > 1 else 0]
                rows.append(r)
        inv += read_rows(d / "invocations.jsonl")
    rows.sort(key=lambda r: (str(type(r["case_id"])), r["case_id"]))       # stable: methods keep their order
    return rows, inv


def _config_caps(path: Path) -> dict:
    """``{method: (cap of a short target, cap of a long one)}``, the v* step cap of one optimisation
    from a long-form run's ``config.json`` (a long target runs with :func:`long_form_config`)."""
    if not path.exists():
        return {}
    out = {}
    for m, h in json.loads(path.read_text()).get("hparams", {}).items():
        cfg = with_overrides(EditConfig(), **h)
        out[m] = (cfg.target.steps, long_form_config(cfg).target.steps)
    return out


def export_longform_run(src: str | Path, dst: str | Path, runs_root: str | Path | None = None) -> dict:
    """Copy a long-form run folder (and its per-process sub-folders) to ``dst`` for committing:
    ``rows.jsonl``, ``config.json``, ``invocations.jsonl`` (the machine's run-folder path in each
    command written as ``$RUNS``) and a ``status.json`` saying how far each method got."""
    src, dst = Path(src), Path(dst)
    root = str(Path(runs_root) if runs_root is not None else src.parent)
    folders = [d for d in [src, *sorted(p for p in src.iterdir() if p.is_dir())] if (d / "rows.jsonl").exists()]
    for d in folders:
        out = dst / d.relative_to(src)
        out.mkdir(parents=True, exist_ok=True)
        _drop_partial_line(d / "rows.jsonl")
        shutil.copyfile(d / "rows.jsonl", out / "rows.jsonl")
        if (d / "config.json").exists():
            shutil.copyfile(d / "config.json", out / "config.json")
        lines = [json.dumps({**e, "command": e["command"].replace(root, "$RUNS")} if "command" in e else e)
                 for e in read_rows(d / "invocations.jsonl")]
        (out / "invocations.jsonl").write_text("".join(line + "\n" for line in lines))
    rows, inv = read_run(dst)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    status = {"records_done": {m: len({r["case_id"] for r in rows if r["method"] == m}) for m in methods},
              "records_common": len(_common_ids(rows, methods)) if methods else 0,
              "edit_hours": {m: round(sum(r.get("seconds", 0.0) for r in rows if r["method"] == m) / 3600, 2)
                             for m in methods},
              "sittings": sum(1 for e in inv if e.get("event") == "start")}
    write_json(dst / "status.json", status)
    return status


def _score_row(model, tok, req, gens: dict, target_emb, before_unrelated) -> dict:
    """Scores of one row's continuations; the similarity uses ``model`` as it is (the unedited model)."""
    texts = [gens["prompt"], gens["paraphrase"]]
    emb = embed_texts(model, tok, texts)
    sims = cosine(emb, target_emb.expand(len(texts), -1))
    scores = {}
    for kind, text, sim in zip(("prompt", "paraphrase"), texts, sims):
        scores[kind] = {**text_scores(text, req.target_new), "similarity": sim}
    loc = locality_scores(before_unrelated, gens["unrelated"]) if before_unrelated is not None else None
    return {"scores": scores, "locality": loc}


def run_longform(model, tok, requests, methods=LONGFORM_METHODS, *, out=None, hparams=None,  # noqa: C901 - the resumable run: skips, per-method edits and evaluation in one loop
                 max_new_tokens: int | None = None, resume: bool = True, progress: bool = True) -> list[dict]:
    """Edit each long-form request on its own with each method, score it, restore the weights.

    ``requests``: :class:`~bluebook.data.EditRequest` with a paragraph ``target_new``, one
    ``paraphrase_prompts`` entry and ``neighborhood_prompts`` about unrelated subjects (as
    :func:`bluebook.data.longform.load_longform` gives). ``hparams``: one value for every method (a
    dict of overrides, a preset name, an ``EditConfig``) or ``{method: value}``.
    ``max_new_tokens``: the greedy budget (default: the target's own length in tokens).
    ``out``: a folder for ``rows.jsonl`` and ``config.json`` (resumed when ``resume``).
    Returns every row: the unedited model's (``method="none"``) and each method's per record.
    """
    methods = [parse_method(m).name for m in methods]
    requests = list(requests)
    for r in requests:
        if len(r.paraphrase_prompts) < 1:
            raise ValueError(f"request {r.case_id!r}: paraphrase_prompts is empty; long-form runs score one paraphrase")
    ids = [r.case_id for r in requests]
    if None in ids or len(set(ids)) != len(ids):
        raise ValueError("every long-form request needs its own case_id (rows are keyed by it)")
    config = {"methods": methods, "case_ids": ids, "max_new_tokens": max_new_tokens,
              "hparams": {m: asdict(resolve_config(model, parse_method(m), for_method(hparams, m))) for m in methods}}
    config = json.loads(json.dumps(jsonable(config)))
    rows_path = Path(out) / "rows.jsonl" if out is not None else None
    done: dict[tuple, dict] = {}
    if rows_path is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        cfg_path = Path(out) / "config.json"
        if resume and cfg_path.exists():
            old = json.loads(cfg_path.read_text())
            diff = ["max_new_tokens"] if old.get("max_new_tokens") != config["max_new_tokens"] else []
            diff += [f"hparams of {m}" for m in methods
                     if m in old.get("hparams", {}) and old["hparams"][m] != config["hparams"][m]]
            if diff:
                raise ValueError(f"{cfg_path} was written with other settings ({', '.join(diff)}); use another "
                                 "folder or resume=False")
            config["methods"] = list(dict.fromkeys(old.get("methods", []) + methods))
            config["case_ids"] = list(dict.fromkeys(old.get("case_ids", []) + ids))
            config["hparams"] = {**old.get("hparams", {}), **config["hparams"]}
        elif not resume and rows_path.exists():
            rows_path.unlink()
        write_json(cfg_path, config)
        if resume:
            _drop_partial_line(rows_path)
            done = {(r["case_id"], r["method"]): r for r in read_rows(rows_path)}
    for m in methods:                           # statistics from the unedited model, before any edit
        prepare_stats(model, tok, m, for_method(hparams, m), progress=progress)

    rows = []
    bar = tqdm(total=len(requests) * (len(methods) + 1), desc="long-form", disable=not progress)
    for req in requests:
        budget = _budget(tok, req, max_new_tokens)
        prompts = [req.text, req.paraphrase_prompts[0], *req.neighborhood_prompts]
        target_emb = None
        before = done.get((req.case_id, "none"))
        if before is None:
            t0 = time.perf_counter()
            g = greedy_continuations(model, tok, prompts, budget)
            gens = {"prompt": g[0], "paraphrase": g[1], "unrelated": g[2:]}
            target_emb = embed_texts(model, tok, [req.target_new])
            before = {"case_id": req.case_id, "method": "none", "layers": [], "generations": gens,
                      **_score_row(model, tok, req, gens, target_emb, None), "seconds": time.perf_counter() - t0}
            _emit(rows_path, before)
        rows.append(before)
        bar.update(1)
        for m in methods:
            row = done.get((req.case_id, m))
            if row is None:
                if target_emb is None:
                    target_emb = embed_texts(model, tok, [req.target_new])
                t0 = time.perf_counter()
                res = edit(model, tok, [req], m, hparams=for_method(hparams, m), progress=False)
                t_edit = time.perf_counter() - t0
                with res:                            # applied for the generations, restored after
                    g = greedy_continuations(model, tok, prompts, budget)
                gens = {"prompt": g[0], "paraphrase": g[1], "unrelated": g[2:]}
                tr = res.targets
                row = {"case_id": req.case_id, "method": m, "layers": list(res.layers), "generations": gens,
                       **_score_row(model, tok, req, gens, target_emb, before["generations"]["unrelated"]),
                       "windows": len(res.diagnostics.get("long_form", {}).get("columns", [])) or 1,
                       "steps_cap": res.diagnostics["config"].target.steps,   # the cap it ran with
                       "target_steps": {str(l): list(t.steps) for l, t in tr.items()},
                       "final_prob": {str(l): [float(p) for p in t.final_prob] for l, t in tr.items()},
                       "edit_seconds": t_edit, "timings": dict(res.diagnostics["timings"]),
                       "seconds": time.perf_counter() - t0}
                _emit(rows_path, row)
            rows.append(row)
            bar.update(1)
    bar.close()
    return rows


def _drop_partial_line(path: Path) -> None:
    """Cut a last line that a crash left unfinished, so the next row starts on a line of its own."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def _emit(path, row) -> None:
    if path is not None:
        append_jsonl(path, row)


def _values(rows, method, kind, metric, case_ids):
    by = {r["case_id"]: r for r in rows if r["method"] == method}
    out = []
    for c in case_ids:
        r = by.get(c)
        if r is None:
            out.append(None)
        elif kind == "locality":
            out.append(sum(x[metric] for x in r["locality"]) / len(r["locality"]) if r["locality"] else None)
        else:
            out.append(r["scores"][kind][metric])
    return out


def _common_ids(rows, methods):
    sets = [{r["case_id"] for r in rows if r["method"] == m} for m in methods]
    first = [r["case_id"] for r in rows if r["method"] == methods[0]]
    common = set.intersection(*sets) if sets else set()
    return [c for c in dict.fromkeys(first) if c in common]


def summarize_longform(rows: list[dict]) -> dict:
    """Per method: every score's mean with its 95 % interval over the records all methods finished
    (bootstrap), the share of records whose answer reproduces most of the target
    (``<kind>.reproduced``: ROUGE-L ≥ :data:`REPRODUCED`, Wilson), the unchanged-continuation rate on
    unrelated prompts (Wilson), the edit time and the number of records."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    ids = _common_ids(rows, methods)
    out = {"n_records": len(ids), "methods": {}}
    for m in methods:
        d = {}
        for kind in ("prompt", "paraphrase"):
            for metric in SCORED:
                d[f"{kind}.{metric}"] = bootstrap_mean(_values(rows, m, kind, metric, ids)).as_dict()
            hits = [None if v is None else float(v >= REPRODUCED) for v in _values(rows, m, kind, "rougeL", ids)]
            d[f"{kind}.reproduced"] = interval(hits).as_dict()
        if m != "none":
            d["locality.rougeL"] = bootstrap_mean(_values(rows, m, "locality", "rougeL", ids)).as_dict()
            unchanged = [x["unchanged"] for r in rows if r["method"] == m and r["case_id"] in set(ids)
                         for x in r["locality"]]
            d["locality.unchanged"] = interval(unchanged).as_dict()
            secs = [r["edit_seconds"] for r in rows if r["method"] == m and r["case_id"] in set(ids)]
            d["edit_seconds"] = bootstrap_mean(secs).as_dict()
        out["methods"][m] = d
    return out


def _budget_note(rows, base: str, blue: str, ids: set) -> str:
    """What each method spent on v*: mean steps per window summed over its optimisations, and the
    base's final window probability (is its single optimisation what limits it?)."""
    def per_window(m):
        vals = [sum(s[w] for s in r["target_steps"].values()) for r in rows if r["method"] == m
                and r["case_id"] in ids and r.get("target_steps") for w in range(r["windows"])]
        return sum(vals) / len(vals) if vals else float("nan")
    def cap(m):
        caps = {r.get("steps_cap") for r in rows if r["method"] == m and r["case_id"] in ids}
        return caps.pop() if len(caps) == 1 else None

    probs = [p for r in rows if r["method"] == base and r["case_id"] in ids and r.get("final_prob")
             for p in r["final_prob"][max(r["final_prob"], key=int)]]
    p = sum(probs) / len(probs) if probs else float("nan")
    cb, cu = cap(base), cap(blue)
    rule = ("step caps not recorded with every row" if cb is None or cu is None
            else f"{budget_rule(cb, cu, 'window')}: caps {blue} {cu}, {base} {cb}")
    return (f"v* budget: {rule}; steps used per window: {base} {per_window(base):.1f}, {blue} "
            f"{per_window(blue):.1f} (BLUE optimises twice per window); {base}'s v* ended at a "
            f"mean window probability of {p:.2f}")


def longform_claims(rows: list[dict], evidence: str = "live", note: str = "") -> dict:
    """The paper's "BLUE remains effective in long-text editing", per base/BLUE pair present: the
    paired difference (BLUE − base) of ROUGE-L on the edit prompt and on the paraphrase, over the
    same records. *Agrees* when BLUE is not worse beyond a margin of 0.02 ROUGE-L — the claim is
    that BLUE stays effective, not that it wins — *disagrees* when it is clearly worse."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    claims = {}
    for blue in methods:
        if blue == "none":
            continue
        _, base, is_b = split_method(blue)
        if not is_b or base not in methods or not is_blue_pair(blue, base):
            continue
        ids = _common_ids(rows, [base, blue])
        budget = _budget_note(rows, base, blue, set(ids))
        for kind in ("prompt", "paraphrase"):
            a = _values(rows, blue, kind, "rougeL", ids)
            b = _values(rows, base, kind, "rougeL", ids)
            est = paired_difference(a, b)
            margin = 0.02
            verdict = ("agrees" if est.low > -margin else "disagrees" if est.high < -margin else "inconclusive")
            label = "; ".join(x for x in (note, budget) if x)
            if est.n < SMALL_SAMPLE:
                tag = (f"small live sample (n={est.n}): illustrates the computation, not the paper's effect size"
                       if evidence == "live" else f"small sample (n={est.n})")
                label = "; ".join(x for x in (tag, note, budget) if x)
            claims[f"{blue}_long_form_{kind}_rougeL"] = claim(
                f"BLUE remains effective in long-text editing ({base}: BLUE − base ROUGE-L on the "
                f"{'edit prompt' if kind == 'prompt' else 'paraphrased question'}, not below −{margin})",
                round(est.value, 6), (est.low, est.high), est.n, verdict, evidence, label)
    return claims
