"""Method variants as small strategies plugged into the one edit loop (:func:`bluebook.edit`).

A method is (solver, distribution, post-processing):

============== ================================== ============ =====================
name           solver                             distribution post-processing
============== ================================== ============ =====================
memit          λC + KKᵀ                           even         –
memit_seq      λC + C_p + KKᵀ (C_p accumulates)   even         –
alphaedit      null-space projected, C_p, α       even         –
rect           λC + KKᵀ                           even         keep top-k% relative change
prune          λC + KKᵀ                           even         restrain singular values
``*_blue``     same                               boundary     same
============== ================================== ============ =====================
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bluebook.core import solvers
from bluebook.core.distribute import Boundary, Even

_DT = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class MemitSolver:
    """``Δ = R Kᵀ (λC + [C_p] + KKᵀ)⁻¹``; ``sequential`` adds the accumulated ``C_p``."""
    sequential: bool = False
    name: str = "memit"

    accumulates = property(lambda self: self.sequential)

    def delta(self, K, R, layer, ctx) -> torch.Tensor:
        C = ctx.C(layer).to(K.device)
        C_p = ctx.state.C_p.get(layer) if self.sequential else None
        return solvers.memit_delta(K, R, C, ctx.cfg.lam, C_p=None if C_p is None else C_p.to(K.device),
                                   dtype=_DT[ctx.cfg.solve_dtype])


@dataclass(frozen=True)
class AlphaEditSolver:
    """``Δ = R Kᵀ P ((KKᵀ + C_p) P + α I)⁻¹`` with ``P`` the null-space projector of ``C``."""
    name: str = "alphaedit"
    accumulates = True

    def delta(self, K, R, layer, ctx) -> torch.Tensor:
        P = ctx.P(layer).to(K.device)
        C_p = ctx.state.C_p.get(layer)
        alpha = ctx.cfg.alpha_blue if (ctx.method.blue and ctx.cfg.alpha_blue is not None) else ctx.cfg.alpha
        return solvers.alphaedit_delta(K, R, P, C_p=None if C_p is None else C_p.to(K.device), alpha=alpha,
                                       dtype=_DT[ctx.cfg.solve_dtype])


@dataclass(frozen=True)
class Rect:
    """RECT: keep only the top ``rect_keep_percent`` % entries of each update by relative change."""
    name: str = "rect"
    needs_w0 = False

    def post(self, deltas, weights, ctx):
        return {l: solvers.rect_mask(d, weights[l].to(d.device, d.dtype), ctx.cfg.rect_keep_percent)
                for l, d in deltas.items()}


@dataclass(frozen=True)
class Prune:
    """PRUNE: restrain the singular values of the accumulated edit ``W − W₀`` above ``σ_max(W₀)``.

    Paper form (default): after every batch, ``W ← W₀ + restrain(W + Δ − W₀)``.
    Reference form (``prune_reference=True``): batches are plain MEMIT and
    :meth:`SequentialState.finalize` applies ``W ← W + restrain(W − W₀)`` once after the last batch
    (the reference adds the restrained edit on top of the already-edited weight).
    """
    name: str = "prune"
    needs_w0 = True

    def post(self, deltas, weights, ctx):
        if ctx.cfg.prune_reference:
            return deltas
        out = {}
        for l, d in deltas.items():
            W = weights[l].to(d.device, torch.float64)
            W0 = ctx.state.W0[l].to(d.device, torch.float64)
            acc = W + d.to(torch.float64) - W0
            restrained = solvers.prune_restrain(acc, solvers.top_singular_value(W0))
            out[l] = (W0 + restrained - W).to(d.dtype)
        return out


@dataclass(frozen=True)
class Method:
    name: str
    base: str
    blue: bool
    solver: object
    post: object | None

    @property
    def distribution(self):
        return Boundary() if self.blue else Even()


_BASES = {
    "memit": (MemitSolver(False), None),
    "memit_seq": (MemitSolver(True, "memit_seq"), None),
    "alphaedit": (AlphaEditSolver(), None),
    "rect": (MemitSolver(False), Rect()),
    "prune": (MemitSolver(False), Prune()),
}
METHODS = tuple(b + s for b in _BASES for s in ("", "_blue"))


def parse_method(name) -> Method:
    """``"memit"``, ``"alphaedit_blue"``, ``"MEMIT-BLUE"``, ... → :class:`Method`."""
    if isinstance(name, Method):
        return name
    if not isinstance(name, str):
        raise ValueError(f"method must be a string, got {name!r}")
    key = name.strip().lower().replace("-", "_")
    blue = key.endswith("_blue")
    base = key[: -len("_blue")] if blue else key
    if base not in _BASES:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    solver, post = _BASES[base]
    return Method(key, base, blue, solver, post)
