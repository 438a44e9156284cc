"""Evaluation along a sequential run: which points, what is measured there, how it is stored.

A run of ``n`` records in batches of ``batch`` is evaluated after every ``every`` edits and at the
end (:func:`eval_points`). At a point with ``k`` edits done, the **first k records** (all edited so
far: retention of the earlier edits) are scored on the model as it is, general ability is measured
(:class:`~bluebook.metrics.suite.AbilitySuite`), and one JSON file is written (:func:`evaluate_point`)
with the summary, an interval for every rate, compact per-record columns (for paired comparisons
and for the unedited baseline on the same records), the time it took and its peak memory.

Fluency needs generation, the dearest part of the evaluation (about 0.7 s per 100-token sample on
one CPU thread for the embedded model). :class:`EvalPlan` can restrict it to the first
``fluency_records`` records of the run and their first ``fluency_prompts`` generation prompts, the
same subset at every point; the stored config says which.

An evaluation never changes the weights, and its sampling uses a forked RNG, so evaluating more or
less often never changes the edits.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from bluebook.metrics import evaluate_counterfact, evaluate_zsre, summarize
from bluebook.metrics.counterfact import add_generation_metrics
from bluebook.metrics.intervals import interval
from bluebook.metrics.suite import AbilitySuite
from bluebook.model.specs import proj_weight
from bluebook.model.weights import restore_weights, snapshot_weights
from bluebook.runs import PeakMemory, atomic_write_bytes, write_json

__all__ = ["COLUMN_KEYS", "EvalPlan", "eval_points", "evaluate_point", "case_columns", "eval_file", "snapshot_file",
           "valid_eval", "PointEvaluator", "stored_evals", "write_safetensors", "read_safetensors"]

#: The per-case key behind each table column.
COLUMN_KEYS = {"counterfact": {"efficacy": "rewrite_success", "generalization": "paraphrase_success",
                               "specificity": "neighborhood_success", "fluency": "ngram_entropy",
                               "consistency": "reference_score"},
               "zsre": {"efficacy": "rewrite_acc", "generalization": "paraphrase_acc",
                        "specificity": "neighborhood_acc"}}


def eval_points(n: int, batch: int, every: int | None) -> list[int]:
    """Numbers of edits after which the run is evaluated: every ``every`` edits and ``n``."""
    if every is None or every >= n:
        return [n]
    if not isinstance(every, int) or every < 1 or every % batch:
        raise ValueError(f"eval_every must be a positive multiple of batch={batch}, got {every!r}")
    return list(range(every, n, every)) + [n]


@dataclass(frozen=True)
class EvalPlan:
    """What an evaluation point measures. ``every``: evaluate after every ``every`` edits (None:
    only at the end). ``generation``: fluency (and consistency with ``resources``) on CounterFact,
    from the first ``fluency_records`` records (None: all) and their first ``fluency_prompts``
    generation prompts (None: all). ``suite``: general ability (None: not measured)."""
    dataset: str = "counterfact"
    every: int | None = None
    generation: bool = False
    fluency_records: int | None = None
    fluency_prompts: int | None = None
    resources: object = None
    seed: int = 0
    eval_batch_size: int = 64
    suite: AbilitySuite | None = None

    def __post_init__(self):
        for name in ("every", "fluency_records", "fluency_prompts"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive int or None, got {v!r}")

    def metrics_config(self) -> dict:
        """Everything the record metrics depend on (``every`` and batch sizes do not change them)."""
        gen = self.generation and self.dataset == "counterfact"
        return {"dataset": self.dataset, "generation": gen,
                "fluency_records": self.fluency_records if gen else None,
                "fluency_prompts": self.fluency_prompts if gen else None,
                "consistency": bool(gen and self.resources is not None), "seed": self.seed}

    def ability_config(self) -> dict | None:
        return self.suite.config() if self.suite is not None else None

    def config(self) -> dict:
        return {**self.metrics_config(), "ability": self.ability_config()}


def _generation(model, tok, requests, cases, plan: EvalPlan) -> None:
    """Fluency (and consistency) for the plan's subset, written into the matching case dicts."""
    subset = requests[:plan.fluency_records] if plan.fluency_records else requests
    subset = [replace(r, generation_prompts=tuple(r.generation_prompts[:plan.fluency_prompts]))
              if plan.fluency_prompts else r for r in subset]
    add_generation_metrics(model, tok, subset, cases[:len(subset)], plan.resources, seed=plan.seed)


def case_columns(cases, dataset: str) -> dict:
    """Per-record values of each table column, as lists in record order (None where not measured)."""
    keys = COLUMN_KEYS[dataset]
    cols = {"case_id": [c["case_id"] for c in cases]}
    for name, key in keys.items():
        vals = [c.get(key) for c in cases]
        if any(v is not None for v in vals):
            cols[name] = [None if v is None else round(float(v), 6) for v in vals]
    return cols


def _intervals(cols: dict) -> dict:
    out = {}
    for name, vals in cols.items():
        if name != "case_id" and any(v is not None for v in vals):
            out[name] = interval(vals, scale=100.0).as_dict(digits=2)
    return out


def _same(a, b) -> bool:
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def evaluate_point(model, tok, requests, plan: EvalPlan, ability_reference: dict | None = None,
                   edits: int | None = None, reuse: dict | None = None) -> tuple[dict, list[dict] | None]:
    """Score ``requests`` (the records edited so far) and the plan's general ability on the model
    as it is. Returns ``(record, cases)``: the JSON record of the point and the full per-case dicts.

    ``reuse``: an earlier record of the same point; the part of it measured with this plan's config
    (record metrics, general ability) is kept and only the rest is measured (``cases`` is then
    None when the record metrics were kept)."""
    reuse = reuse or {}
    keep_metrics = _same(reuse.get("eval_config"), plan.metrics_config()) and reuse.get("records") == len(requests)
    keep_ability = _same((reuse.get("ability") or {}).get("config"), plan.ability_config())
    if keep_metrics and keep_ability:
        return reuse, None
    t0 = time.perf_counter()
    cases = None
    with PeakMemory() as pm:
        if keep_metrics:
            part = {k: reuse[k] for k in ("summary", "intervals", "columns")}
            t_metrics = reuse["seconds"]["metrics"]
        else:
            if plan.dataset == "counterfact":
                cases = evaluate_counterfact(model, tok, requests, batch_size=plan.eval_batch_size)
                if plan.generation:
                    _generation(model, tok, requests, cases, plan)
            else:
                cases = evaluate_zsre(model, tok, requests, batch_size=plan.eval_batch_size)
            cols = case_columns(cases, plan.dataset)
            part = {"summary": summarize(cases, plan.dataset), "intervals": _intervals(cols), "columns": cols}
            t_metrics = round(time.perf_counter() - t0, 2)
        t1 = time.perf_counter()
        ability = None
        if plan.suite is not None:
            ability = plan.suite.evaluate(model, tok, ability_reference or {})
    record = {"edits": len(requests) if edits is None else int(edits), "records": len(requests),
              "eval_config": plan.metrics_config(), **part, "ability": ability,
              "seconds": {"metrics": t_metrics, "ability": round(time.perf_counter() - t1, 2)},
              "memory": pm.result(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    record["seconds"]["total"] = round(record["seconds"]["metrics"] + record["seconds"]["ability"], 2)
    return record, cases


# --------------------------------------------------------------------------------------------
# stored points of a run folder
# --------------------------------------------------------------------------------------------

def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict | None = None) -> None:
    """``tensors`` (moved to the CPU) into a safetensors file, written atomically."""
    data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(path, save(data, metadata=meta))


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def eval_file(mdir: Path, k: int) -> Path:
    return mdir / "evals" / f"edits_{k:05d}.json"


def snapshot_file(mdir: Path, k: int) -> Path:
    return mdir / "snapshots" / f"weights_at_{k:05d}.safetensors"


def valid_eval(path: Path, plan: EvalPlan) -> dict | None:
    """The stored evaluation at ``path`` if every part of it was measured with this plan's config."""
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    ok = _same(rec.get("eval_config"), plan.metrics_config()) and rec.get("records") == rec.get("edits") and \
        _same((rec.get("ability") or {}).get("config"), plan.ability_config())
    return rec if ok else None


class PointEvaluator:
    """Evaluation points of one method: snapshot the edited layers, measure, store (sequence.py)."""

    def __init__(self, model, tok, requests, plan: EvalPlan, ability_ref, mdir: Path, batch: int):
        self.model, self.tok, self.requests, self.plan = model, tok, requests, plan
        self.ref, self.mdir = ability_ref, mdir
        self.points = eval_points(len(requests), batch, plan.every)
        self.batch = batch

    def edits_after(self, bi: int) -> int:
        return min((bi + 1) * self.batch, len(self.requests))

    def snapshot(self, k: int, edited) -> None:
        write_safetensors(snapshot_file(self.mdir, k),
                           {f"layer.{l}": proj_weight(self.model, l) for l in sorted(edited)})

    def measure(self, k: int) -> tuple[dict, list | None]:
        """The stored evaluation at ``k`` edits, or a new one on the model as it is now."""
        path = eval_file(self.mdir, k)
        old = json.loads(path.read_text()) if path.exists() else None
        rec, cases = evaluate_point(self.model, self.tok, self.requests[:k], self.plan, self.ref, edits=k, reuse=old)
        if rec is not old:
            write_json(path, rec)
        return rec, cases

    def catch_up(self, done_edits: int, edited, log) -> None:
        """On resume: measure the points up to ``done_edits`` (the checkpointed weights now loaded)
        whose evaluation is missing or was made with another plan: from their kept snapshots, and the
        point at ``done_edits`` itself on the current weights. The final point is left to the end of
        the run. The current weights are put back afterwards."""
        todo = [k for k in self.points if k <= done_edits and k < len(self.requests)
                and valid_eval(eval_file(self.mdir, k), self.plan) is None]
        if not todo:
            return
        current = None
        for k in todo:
            if k == done_edits:
                if current is not None:
                    restore_weights(self.model, current)
                    current = None
                if not snapshot_file(self.mdir, k).exists():
                    self.snapshot(k, edited)
                log(f"[replicate] {self.mdir.name}: evaluating the point at {k} edits")
                self.measure(k)
                continue
            snap = snapshot_file(self.mdir, k)
            if not snap.exists():
                log(f"[replicate] {self.mdir.name}: no snapshot at {k} edits, that point cannot be evaluated")
                continue
            weights = read_safetensors(snap)
            layers = sorted(int(x.split(".")[1]) for x in weights)
            current = current if current is not None else {}
            current.update(snapshot_weights(self.model, [l for l in layers if l not in current], device="cpu"))
            restore_weights(self.model, {l: weights[f"layer.{l}"] for l in layers})
            log(f"[replicate] {self.mdir.name}: evaluating the snapshot at {k} edits")
            self.measure(k)
        if current is not None:
            restore_weights(self.model, current)


def stored_evals(mdir: Path) -> list[dict]:
    """The stored evaluation points of a method folder, without their per-record columns."""
    out = []
    for p in sorted((mdir / "evals").glob("edits_*.json")):
        rec = json.loads(p.read_text())
        rec.pop("columns", None)
        out.append(rec)
    return out
