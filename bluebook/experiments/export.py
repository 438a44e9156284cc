"""Saving an edited model with a JSON edit log, and loading it back."""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
from pathlib import Path

from bluebook.model.loading import load_model
from bluebook.runs import atomic_dir, jsonable


def package_version() -> str:
    """bluebook's installed version (``"unknown"`` when run from a source tree that was never installed)."""
    try:
        return importlib.metadata.version("bluebook")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def edit_log(results, extra: dict | None = None) -> dict:
    """A JSON-able record of what was applied: method, hyperparameters, requests, statistics key."""
    entries = []
    for r in results:
        cfg = r.diagnostics.get("config")
        entries.append({
            "method": r.method, "layers": r.layers, "applied": r.applied,
            "hparams": dataclasses.asdict(cfg) if cfg is not None else None,
            "requests": [q.to_dict() for q in r.requests],
            "statistics": {"model_fingerprint": r.state.fingerprint,
                           "stats_config": dataclasses.asdict(cfg.stats) if cfg is not None else None},
            "update_norms": {str(l): float(d.norm()) for l, d in r.deltas.items()},
        })
    return jsonable({"bluebook_version": package_version(), "edits": entries, **(extra or {})})


def save_edited(model, tok, path: str | Path, results, extra: dict | None = None) -> Path:
    """Write ``model`` (as it is now, i.e. with the applied edits) + tokenizer + ``edit_log.json``.

    The folder is written next to ``path`` and renamed into place, so an interruption never leaves a
    half-written model. Load it back with :func:`load_edited` (or ``bluebook.load_model(path)``).
    """
    path = Path(path)
    if any(not r.applied for r in results):
        raise ValueError("every EditResult passed to save_edited must be applied (result.apply())")
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "edit_log.json").write_text(json.dumps(edit_log(results, extra), indent=2))
    return path


def load_edited(path: str | Path, device="auto", dtype=None):
    """``(model, tokenizer, edit_log)`` from a folder written by :func:`save_edited`."""
    path = Path(path)
    log_file = path / "edit_log.json"
    if not log_file.exists():
        raise FileNotFoundError(f"{path} has no edit_log.json (not written by bluebook.export.save_edited)")
    model, tok = load_model(str(path), device=device, dtype=dtype)
    return model, tok, json.loads(log_file.read_text())
