"""What persists across the batches of one sequential-editing run (never module globals)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from bluebook.core.methods import parse_method
from bluebook.runs import atomic_write_bytes


@dataclass
class SequentialState:
    """What persists across batches of one sequential-editing run (never module globals).

    The container is shared; its entries belong to the strategies that write them
    (:mod:`bluebook.core.methods`): ``C_p[l]``, the accumulated ``K_p K_pᵀ`` of applied batches
    (MEMIT-seq and AlphaEdit solvers); ``projectors[l]``, AlphaEdit's ``P``; ``W0[l]``, PRUNE's original
    weights (math layout, CPU). ``stats[l]`` holds the layer statistics ``C`` of the unedited model,
    kept so a run never recomputes them on the edited model; ``fingerprint`` names that model;
    ``templates`` the context templates sampled once per run.
    """
    method: str | None = None
    fingerprint: str | None = None
    C_p: dict[int, torch.Tensor] = field(default_factory=dict)
    W0: dict[int, torch.Tensor] = field(default_factory=dict)
    stats: dict[int, torch.Tensor] = field(default_factory=dict)
    projectors: dict[int, torch.Tensor] = field(default_factory=dict)
    n_batches: int = 0
    n_edits: int = 0
    finalized: bool = False
    prune_reference: bool = False
    templates: tuple | None = None

    def save(self, path: str | Path) -> Path:
        """Write the state (C_p, W0 and counters; C and P are recomputable caches) atomically."""
        tensors = {f"C_p.{l}": t.contiguous().cpu() for l, t in self.C_p.items()}
        tensors.update({f"W0.{l}": t.contiguous().cpu() for l, t in self.W0.items()})
        meta = {"bluebook_state": json.dumps({"method": self.method, "fingerprint": self.fingerprint,
                                              "n_batches": self.n_batches, "n_edits": self.n_edits,
                                              "finalized": self.finalized,
                                              "prune_reference": self.prune_reference,
                                              "templates": self.templates})}
        if not tensors:
            tensors = {"_empty": torch.zeros(1)}
        return atomic_write_bytes(path, save(tensors, metadata=meta))

    @classmethod
    def load(cls, path: str | Path) -> "SequentialState":
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {})["bluebook_state"])
                if meta.get("templates") is not None:
                    meta["templates"] = tuple(tuple(g) for g in meta["templates"])
                st = cls(**meta)
                for k in f.keys():
                    kind, _, l = k.partition(".")
                    if kind == "C_p":
                        st.C_p[int(l)] = f.get_tensor(k)
                    elif kind == "W0":
                        st.W0[int(l)] = f.get_tensor(k)
        except Exception as exc:
            raise ValueError(f"cannot read sequential state {path}: {exc}") from exc
        return st

    def finalize(self, model) -> dict[int, torch.Tensor]:
        """Once after the last batch: the method's post-processing finish (PRUNE's reference form
        applies ``W ← W + restrain(W − W₀)``); a no-op for every other method. Returns the updates applied."""
        post = parse_method(self.method).post if self.method else None
        return post.finalize(model, self) if post is not None else {}
