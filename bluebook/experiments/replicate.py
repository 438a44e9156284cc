"""The reference sequential batch-editing protocol (algorithms.md §9.1), resumable, for many methods.

For each method, starting from the unedited weights: split the first ``n`` records into
consecutive batches of ``batch``, apply every batch **permanently** in order (one
:class:`~bluebook.editor.SequentialState` per method), then evaluate **every** edited record on the
final model. One extra row, ``"unedited"``, evaluates the same records before any edit.

Layout of ``out/``::

    unedited/cases.json, summary.json
    <method>/progress.json            config, batches done, per-batch timings and v* step counts,
                                      checkpoint file names
    <method>/weights_b<k>.safetensors edited projection weights after batch k (only the edited layers)
    <method>/state_b<k>.safetensors   the SequentialState after batch k
    <method>/cases.json, summary.json per-case and summary metrics (summary.json = method finished)
    results.json, results.csv, results.md

Restoring the unedited weights between methods is exact and cheap: the original weight of every
projection a method touches is copied (once) before its first change and copied back afterwards.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path

from tqdm.auto import tqdm

from bluebook.core.config import EditConfig
from bluebook.core.methods import PAPER_ORDER, parse_method
from bluebook.core.names import for_method
from bluebook.data import as_requests, load_counterfact, load_zsre
from bluebook.editor import SequentialState, edit, prepare_stats, resolve_config
from bluebook.experiments.sequence import (
    EvalPlan,
    PointEvaluator,
    eval_file,
    eval_points,
    evaluate_point,
    read_safetensors,
    stored_evals,
    valid_eval,
    write_safetensors,
)
from bluebook.experiments.tables import COLUMNS, UNEDITED, dataset_name, results_table, write_tables
from bluebook.metrics.suite import AbilitySuite
from bluebook.model.loading import load_model, model_fingerprint
from bluebook.model.specs import proj_weight
from bluebook.model.weights import restore_weights, snapshot_weights
from bluebook.runs import PeakMemory, atomic_write_bytes, write_json

__all__ = ["COLUMNS", "PAPER_ORDER", "UNEDITED", "CheckpointMismatch", "remember", "replicate", "results_table"]


class CheckpointMismatch(ValueError):
    """A checkpoint in the output folder was written by a run with a different configuration."""


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------

def _jsonable_hparams(h):
    """A JSON-friendly description of ``hparams`` for the checkpoint check and the results file."""
    if h is None or isinstance(h, (str, int, float, bool)):
        return h
    if isinstance(h, dict):
        return {str(k): _jsonable_hparams(v) for k, v in sorted(h.items(), key=lambda kv: str(kv[0]))}
    if isinstance(h, (list, tuple)):
        return [_jsonable_hparams(v) for v in h]
    if is_dataclass(h):
        return _jsonable_hparams(asdict(h))
    return repr(h)


def _resolved(model, method: str, hp):
    """The full EditConfig a method will run with (preset + overrides), as JSON: a preset file that
    changed between a crash and the resume must not be mixed into one run."""
    return json.loads(json.dumps(_jsonable_hparams(resolve_config(model, parse_method(method), hp, None))))




def remember(model, originals: dict, layers) -> None:
    """Add CPU copies of the not yet remembered ``layers``' weights to ``originals``."""
    originals.update(snapshot_weights(model, [l for l in layers if l not in originals], device="cpu"))


def _fill_new_fields(found: dict, expected: dict, defaults: dict) -> dict:
    """A checkpoint written before a configuration field existed ran with that field's default: fill
    it in where the current run uses the default too (a non-default value still differs).
    ``long_overrides`` never acts on the short targets a replicate run edits, so it is not compared."""
    out = dict(found)
    for k, v in expected.items():
        if k == "long_overrides":
            out[k] = v
        elif k not in out:
            if isinstance(defaults, dict) and k in defaults and v == defaults[k]:
                out[k] = v
        elif isinstance(v, dict) and isinstance(out[k], dict):
            d = defaults.get(k) if isinstance(defaults, dict) else None
            out[k] = _fill_new_fields(out[k], v, d if isinstance(d, dict) else {})
    return out


def _check_config(found: dict, expected: dict, where: Path, edited: int = 0) -> None:
    """Refuse a checkpoint written with another configuration. The record list may differ in
    length only: a run can be continued to more records (or its evaluation redone on fewer) as
    long as the ``edited`` records it has already applied are the first ones of the new list."""
    found = dict(found)
    if isinstance(found.get("resolved_config"), dict) and isinstance(expected.get("resolved_config"), dict):
        found["resolved_config"] = _fill_new_fields(found["resolved_config"], expected["resolved_config"],
                                                    json.loads(json.dumps(_jsonable_hparams(EditConfig()))))
    diff = [k for k in expected if k not in ("n", "case_ids") and found.get(k) != expected[k]]
    old_ids, new_ids = list(found.get("case_ids") or []), list(expected.get("case_ids") or [])
    common = min(len(old_ids), len(new_ids))            # one list must be a prefix of the other
    if len(new_ids) < edited or old_ids[:common] != new_ids[:common]:
        diff.append("case_ids")
    if diff:
        shown = "; ".join(f"{k}: checkpoint {str(found.get(k))[:80]!r} vs now {str(expected[k])[:80]!r}"
                          for k in diff)
        raise CheckpointMismatch(
            f"checkpoint in {where} was written with a different configuration ({shown}). "
            "Use another output folder, or resume=False (--no-resume) to discard it and start clean.")


def _run_method(model, tok, method, requests, batch, hp, mdir: Path, cfg: dict, originals: dict,  # noqa: C901 - one method's resumable batches, checkpoints and evaluation points
                resume: bool, progress: bool, plan: EvalPlan, ability_ref: dict, log) -> dict:

    progress_file = mdir / "progress.json"
    summary_file = mdir / "summary.json"
    if not resume and mdir.exists():
        shutil.rmtree(mdir)
    mdir.mkdir(parents=True, exist_ok=True)
    prog = json.loads(progress_file.read_text()) if progress_file.exists() else None
    if prog is not None:
        _check_config(prog["config"], cfg, mdir, edited=min(len(prog["config"].get("case_ids", [])),
                                                             int(prog.get("batches_done", 0)) * batch))
    n_batches = math.ceil(len(requests) / batch)
    ev = PointEvaluator(model, tok, requests, plan, ability_ref, mdir, batch)
    final = eval_file(mdir, len(requests))
    if prog is not None and summary_file.exists() and prog.get("evaluated") and valid_eval(final, plan) \
            and all(valid_eval(eval_file(mdir, k), plan) for k in ev.points):
        log(f"[replicate] {method}: finished earlier, skipped")
        return {"summary": json.loads(summary_file.read_text()), "progress": prog, "skipped": True}

    restore_weights(model, originals)                                # the unedited model
    state = SequentialState()
    done, batch_log = 0, []
    if prog is not None and prog.get("batches_done", 0) > 0:
        done = int(prog["batches_done"])
        state = SequentialState.load(mdir / prog["state_file"])
        # statistics from the unedited model, before its checkpointed edits are loaded
        prepare_stats(model, tok, method, hp, state)
        weights = read_safetensors(mdir / prog["weights_file"])
        layers = sorted(int(k.split(".")[1]) for k in weights)
        remember(model, originals, layers)
        restore_weights(model, {l: weights[f"layer.{l}"] for l in layers})      # the checkpointed weights
        batch_log = list(prog.get("batches", []))
        log(f"[replicate] {method}: resuming after batch {done}/{n_batches}")
        ev.catch_up(ev.edits_after(done - 1), layers, log)

    edited = set(prog.get("edited_layers", [])) if prog else set()
    bar = tqdm(total=n_batches, initial=done, desc=f"{method}", unit="batch", disable=not progress)
    for bi in range(done, n_batches):
        chunk = requests[bi * batch:(bi + 1) * batch]
        t0 = time.perf_counter()
        with PeakMemory() as pm:
            res = edit(model, tok, chunk, method, hparams=hp, state=state, apply=False, progress=False)
            remember(model, originals, res.deltas)                 # before the first change of each layer
            res.apply()
        seconds = time.perf_counter() - t0
        edited |= set(res.deltas)
        timings = {k: round(float(v), 4) for k, v in res.diagnostics["timings"].items()}
        # v* steps per request at each optimised layer (as TargetResult.steps counts them): what makes
        # one batch, dataset or method dearer than another
        steps = {str(l): [int(s) for s in t.steps] for l, t in sorted(res.targets.items())}
        batch_log.append({"batch": bi, "case_ids": [r.case_id for r in chunk], "seconds": round(seconds, 4),
                          "timings": timings, "layers": sorted(int(l) for l in res.deltas),
                          "target_steps": steps, "memory": pm.result(),
                          "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
        # checkpoint: new files first, then the progress file that points at them, then drop old ones
        wname, sname = f"weights_b{bi + 1}.safetensors", f"state_b{bi + 1}.safetensors"
        old = prog or {}
        prog = {"config": cfg, "batches_done": bi + 1, "n_batches": n_batches, "weights_file": wname,
                "state_file": sname, "edited_layers": sorted(int(l) for l in edited), "batches": batch_log,
                "evaluated": False}
        try:
            write_safetensors(mdir / wname, {f"layer.{l}": proj_weight(model, l) for l in sorted(edited)})
            state.save(mdir / sname)
            write_json(progress_file, prog)
        except OSError as exc:
            raise OSError(exc.errno, f"{method}: could not write the checkpoint of batch {bi + 1} to {mdir} "
                          f"({exc.strerror or exc}); the checkpoints of the batches before it are kept and "
                          "rerunning the same command resumes from them") from exc
        for key in ("weights_file", "state_file"):
            if old.get(key) and old[key] != prog[key]:
                (mdir / old[key]).unlink(missing_ok=True)
        bar.update(1)
        k = ev.edits_after(bi)
        if k in ev.points and k < len(requests):        # an evaluation point along the run
            ev.snapshot(k, edited)
            ev.measure(k)
    bar.close()

    state.finalize(model)                              # PRUNE reference form only; a no-op otherwise
    ev.snapshot(len(requests), edited)
    t0 = time.perf_counter()
    rec, cases = ev.measure(len(requests))
    if cases is None:                                  # measured before a crash: the full cases again
        cases = evaluate_point(model, tok, requests, plan, ability_ref)[1]
    eval_seconds = time.perf_counter() - t0
    write_json(mdir / "cases.json", cases)
    prog = dict(prog or {"config": cfg, "batches_done": 0, "batches": []})
    prog.update(evaluated=True, eval_seconds=round(eval_seconds, 3))
    write_json(summary_file, rec["summary"])
    write_json(progress_file, prog)
    return {"summary": rec["summary"], "progress": prog, "skipped": False}


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------

def _check_writable(out: Path) -> None:
    """Fail before any work when the output folder cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / ".write-test", b"")
        (out / ".write-test").unlink()
    except OSError as exc:
        raise OSError(exc.errno, f"the output folder {out} is not writable ({exc.strerror or exc}); "
                      "choose another out (--out)") from exc


def _load_requests(dataset, n, data_path, requests):
    if requests is not None:
        reqs = as_requests(requests)
        return reqs[:n] if n is not None else reqs
    loader = load_counterfact if dataset == "counterfact" else load_zsre
    return loader(path=data_path, n=n)


def replicate(model_name_or_model, dataset: str = "counterfact", methods=("memit", "memit_blue"), n: int = 100,  # noqa: C901 - the sequential runner's options (resume, probes, ability suite) meet here
              batch: int = 20, out: str | Path = "replication", hparams=None, device="auto",
              generation: bool = False, resume: bool = True, progress: bool = True, *, tok=None,
              requests=None, data_path: str | Path | None = None, load_kwargs: dict | None = None,
              resources=None, seed: int = 0, eval_batch_size: int = 64, model_name: str | None = None,
              eval_every: int | None = None, ability: AbilitySuite | None = None,
              fluency_records: int | None = None, fluency_prompts: int | None = None) -> dict:
    """Run the sequential batch protocol for each method; write ``out/results.{json,csv,md}``.

    ``model_name_or_model``: a name for :func:`bluebook.load_model` (``"smollm2-135m"``, a local
    folder, ...), a loaded model (then pass ``tok=``), or a ``(model, tok)`` pair. A loaded model is
    edited in place and restored exactly (bit for bit) before returning.
    ``load_kwargs`` go to :func:`bluebook.load_model` (for example ``{"device_map": "auto"}`` on a
    multi-GPU host). ``requests`` replaces the dataset loader; ``data_path`` is a full local
    CounterFact/zsRE file (default: the shipped subset). ``hparams`` is one value for every method
    (None: the preset, a preset name, an ``EditConfig``, a dict of overrides) or ``{method: value}``.
    ``generation=True`` adds fluency (and consistency when ``resources`` is given) on CounterFact,
    restricted to the first ``fluency_records`` records and their first ``fluency_prompts``
    generation prompts when those are given. ``eval_every``: also evaluate after every that many
    edits (a multiple of ``batch``), the records edited so far (``<method>/evals/``); ``ability``:
    an :class:`~bluebook.metrics.suite.AbilitySuite` measured before any edit and at every
    evaluation point. ``model_name`` labels the tables (default: the name given, or the loaded
    model's path). ``resume=True`` continues from the checkpoints in ``out`` (refusing ones written
    with another edit configuration; evaluations made with another evaluation plan are measured
    again from the kept snapshots); ``resume=False`` discards them.

    Returns the ``results.json`` content: ``{"config": ..., "methods": {name: {"summary", "cases",
    "edit_seconds", "eval_seconds", "timings", "hparams", "n_batches", "evals"}}}``.
    """
    label = model_name
    dataset = dataset_name(dataset)
    methods = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods) if m.strip()]
    if methods == ["none"]:
        methods = []                                      # the unedited baseline only
    for m in methods:
        parse_method(m)                                   # unknown names fail before any work
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods contains duplicates: {methods}")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    if isinstance(model_name_or_model, (str, Path)):
        model_name = str(model_name_or_model)
        model, tok = load_model(model_name, device=device, **(load_kwargs or {}))
    else:
        model = model_name_or_model
        if isinstance(model, tuple):
            model, tok = model
        if tok is None:
            raise ValueError("pass tok= together with a loaded model (or a (model, tok) pair)")
        model_name = getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
    model_name = label or model_name
    reqs = _load_requests(dataset, n, data_path, requests)
    if not reqs:
        raise ValueError("no records to edit")
    plan = EvalPlan(dataset=dataset, every=eval_every, generation=bool(generation), fluency_records=fluency_records,
                    fluency_prompts=fluency_prompts, resources=resources, seed=int(seed),
                    eval_batch_size=eval_batch_size, suite=ability)
    eval_points(len(reqs), int(batch), eval_every)        # a bad eval_every fails before any work
    case_ids = [r.case_id for r in reqs]
    out = Path(out)
    _check_writable(out)
    log = print if progress else (lambda *a, **k: None)

    fingerprint = model_fingerprint(model)
    # what the edits depend on (the evaluation plan is checked per evaluation point instead)
    base_cfg = {"dataset": dataset, "n": len(reqs), "batch": int(batch), "case_ids": case_ids,
                "model_fingerprint": fingerprint}
    results = {"config": {**base_cfg, "model": model_name, "methods": methods, "eval": plan.config(),
                          "eval_every": eval_every, "data": str(data_path) if data_path else "shipped"},
               "methods": {}}

    originals: dict = {}       # unedited copies (CPU) of every weight changed so far
    try:
        # the unedited baseline (and the ability reference: facts chosen on the unedited model), once
        udir = out / UNEDITED
        ucfg = {**{k: v for k, v in base_cfg.items() if k != "batch"}, "method": UNEDITED}   # batch-free
        if not resume and udir.exists():
            shutil.rmtree(udir)
        uprog = udir / "progress.json"
        if uprog.exists():
            _check_config(json.loads(uprog.read_text())["config"], ucfg, udir)
        uprog.parent.mkdir(parents=True, exist_ok=True)
        ref_file = udir / "ability_reference.json"
        ability_ref = None
        if ability is not None:
            ability_ref = json.loads(ref_file.read_text()) if ref_file.exists() else None
            if ability_ref is None or ability_ref.get("config") != json.loads(json.dumps(ability.config())):
                ability_ref = {"config": ability.config(), **ability.prepare(model, tok, case_ids)}
                write_json(ref_file, ability_ref)
        for method in methods:
            hp = for_method(hparams, method)
            cfg = {**base_cfg, "method": method, "hparams": _jsonable_hparams(hp),
                   "resolved_config": _resolved(model, method, hp)}
            got = _run_method(model, tok, method, reqs, int(batch), hp, out / method, cfg, originals, resume,
                              progress, plan, ability_ref, log)
            batches = got["progress"].get("batches", [])
            timings: dict[str, float] = {}
            for b in batches:
                for k, v in b["timings"].items():
                    timings[k] = round(timings.get(k, 0.0) + v, 4)
            results["methods"][method] = {
                "summary": got["summary"], "cases": str(out / method / "cases.json"),
                "edit_seconds": round(sum(b["seconds"] for b in batches), 3),
                "eval_seconds": got["progress"].get("eval_seconds"), "timings": timings,
                "batch_seconds": [b["seconds"] for b in batches],
                "batch_peak_rss_mb": [b.get("memory", {}).get("peak_rss_mb") for b in batches],
                "hparams": cfg["hparams"], "config": cfg["resolved_config"],
                "n_batches": len(batches), "skipped": got["skipped"], "evals": stored_evals(out / method)}
            write_tables(out, results)
            restore_weights(model, originals)
        # the unedited baseline last, so that parallel processes on one folder edit first
        restore_weights(model, originals)
        upath = eval_file(udir, 0)
        old = json.loads(upath.read_text()) if upath.exists() and (udir / "cases.json").exists() else None
        urec, cases = evaluate_point(model, tok, reqs, plan, ability_ref, edits=0, reuse=old)
        if urec is not old:
            write_json(upath, urec)
            if cases is not None:
                write_json(udir / "cases.json", cases)
            write_json(udir / "summary.json", urec["summary"])
            write_json(uprog, {"config": ucfg, "evaluated": True, "eval_seconds": urec["seconds"]["total"]})
        results["methods"][UNEDITED] = {"summary": urec["summary"], "cases": str(udir / "cases.json"),
                                        "edit_seconds": 0.0, "eval_seconds": urec["seconds"]["total"],
                                        "timings": {}, "hparams": None, "n_batches": 0, "evals": stored_evals(udir)}

        write_tables(out, results)
    finally:
        restore_weights(model, originals)
    write_tables(out, results)
    return results
