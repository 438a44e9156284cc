"""Method variants as small strategies plugged into the one edit loop (:func:`bluebook.edit`).

A method is a solver (how ``Δ`` is computed from keys ``K`` and residuals ``R``), a residual rule
(:mod:`bluebook.core.distribute`: which layers are updated and with what share of the residual) and
an optional post-processing step applied to the finished updates:

============== ======================================= ============ ==========================
name           solver                                  rule         post-processing
============== ======================================= ============ ==========================
memit          Δ = R Kᵀ (λC + KKᵀ)⁻¹                    even         –
memit_seq      Δ = R Kᵀ (λC + C_p + KKᵀ)⁻¹              even         –
alphaedit      Δ = R Kᵀ P (KKᵀP + C_pP + αI)⁻¹          even         –
rect           as memit                                even         keep the top-k% relative changes
prune          as memit                                even         restrain large singular values
``*_blue``     the same                                boundary     the same
``*_dynamic``  the same                                dynamic      the same
============== ======================================= ============ ==========================

``<base>_blue_dynamic`` (beyond the paper) is BLUE whose second layer is chosen per batch
(:class:`bluebook.core.distribute.Dynamic`).

Each strategy owns the persistent state it needs across sequential batches — the accumulated
``C_p`` (memit_seq, AlphaEdit), the null-space projector ``P`` (AlphaEdit), the original weights
``W₀`` (PRUNE) — reading and writing it through :class:`EditContext`; the loop itself never asks
which method it runs. The tensors live in the run's :class:`~bluebook.editor.SequentialState` so
they are saved and resumed with it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from bluebook.core import solvers
from bluebook.core.config import EditConfig
from bluebook.core.distribute import Boundary, Distribution, Dynamic, Even
from bluebook.core.names import DYNAMIC_METHODS, METHODS, PAPER_ORDER, read_method, split_method  # noqa: F401
from bluebook.core.objective import target_dtype
from bluebook.model.specs import math_weight
from bluebook.model.weights import add_deltas

DTYPES = {"float64": torch.float64, "float32": torch.float32}


class EditContext(Protocol):
    """What a strategy may use: the model, the configuration, the run's state and the statistics."""
    model: object
    cfg: EditConfig
    state: object

    def C(self, layer: int) -> torch.Tensor:
        """``C = E[k kᵀ]`` of the unedited model at ``layer`` (cached in the state)."""
        ...


@runtime_checkable
class Solver(Protocol):
    """Computes one layer's update ``Δ`` (math layout ``d × m``) from keys ``K (m × n)`` and residuals ``R (d × n)``."""
    name: str

    def prepare(self, layers: list[int], ctx: EditContext) -> None:
        """Compute whatever the solves of ``layers`` need (before any timing starts)."""

    def delta(self, K: torch.Tensor, R: torch.Tensor, layer: int, ctx: EditContext) -> torch.Tensor:
        ...

    def commit(self, keys: dict[int, torch.Tensor], ctx: EditContext) -> None:
        """Called once the batch is applied, with the batch's keys ``{layer: K}`` on the edited model."""

    def needs_committed_keys(self) -> bool:
        """Whether :meth:`commit` uses the keys (then the loop reads them after applying)."""
        ...


@runtime_checkable
class PostProcess(Protocol):
    """Turns the finished updates ``{layer: Δ}`` into the ones applied (``weights``: the pre-edit weights)."""
    name: str

    def prepare(self, layers: list[int], ctx: EditContext) -> None:
        ...

    def process(self, deltas: dict[int, torch.Tensor], weights: dict[int, torch.Tensor],
                ctx: EditContext) -> dict[int, torch.Tensor]:
        ...

    def finalize(self, model, state) -> dict[int, torch.Tensor]:
        """Once after the last batch of a sequential run; returns the updates it applied."""
        ...


def _accumulate(keys: dict[int, torch.Tensor], state) -> None:
    """``C_p[l] ← C_p[l] + K_l K_lᵀ`` (float64, CPU) for the keys of an applied batch."""
    for l, K in keys.items():
        add = (K.double() @ K.double().T).cpu()
        state.C_p[l] = add if l not in state.C_p else state.C_p[l] + add


def _C_p(ctx: EditContext, layer: int, device) -> torch.Tensor | None:
    C_p = ctx.state.C_p.get(layer)
    return None if C_p is None else C_p.to(device)


@dataclass(frozen=True)
class MemitSolver:
    """``Δ = R Kᵀ (λC + [C_p] + KKᵀ)⁻¹``; ``sequential`` (MEMIT-seq) also accumulates and uses ``C_p``."""
    sequential: bool = False
    name: str = "memit"

    def prepare(self, layers, ctx) -> None:
        for l in layers:
            ctx.C(l)

    def delta(self, K, R, layer, ctx) -> torch.Tensor:
        C_p = _C_p(ctx, layer, K.device) if self.sequential else None
        try:
            return solvers.memit_delta(K, R, ctx.C(layer).to(K.device), ctx.cfg.lam, C_p=C_p,
                                       dtype=DTYPES[ctx.cfg.solve_dtype])
        except ValueError as exc:
            raise ValueError(f"layer {layer}: {exc}") from exc

    def needs_committed_keys(self) -> bool:
        return self.sequential

    def commit(self, keys, ctx) -> None:
        if self.sequential:
            _accumulate(keys, ctx.state)


@dataclass(frozen=True)
class AlphaEditSolver:
    """``Δ = R Kᵀ P ((KKᵀ + C_p) P + α I)⁻¹`` with ``P`` the null-space projector of ``C``.

    ``blue``: use ``cfg.alpha_blue`` (when set) instead of ``cfg.alpha``, as the reference BLUE code does.
    """
    blue: bool = False
    name: str = "alphaedit"

    def alpha(self, cfg: EditConfig) -> float:
        return cfg.alpha_blue if (self.blue and cfg.alpha_blue is not None) else cfg.alpha

    def projector(self, layer: int, ctx) -> torch.Tensor:
        """``P`` of the unedited model's ``C`` at ``layer`` (computed once per run, kept in the state)."""
        if layer not in ctx.state.projectors:
            ctx.state.projectors[layer] = solvers.nullspace_projector(
                ctx.C(layer).to(torch.float64), ctx.cfg.nullspace_threshold).to(target_dtype(ctx.model))
        return ctx.state.projectors[layer]

    def prepare(self, layers, ctx) -> None:
        for l in layers:
            self.projector(l, ctx)

    def delta(self, K, R, layer, ctx) -> torch.Tensor:
        return solvers.alphaedit_delta(K, R, self.projector(layer, ctx).to(K.device), C_p=_C_p(ctx, layer, K.device),
                                       alpha=self.alpha(ctx.cfg), dtype=DTYPES[ctx.cfg.solve_dtype])

    def needs_committed_keys(self) -> bool:
        return True

    def commit(self, keys, ctx) -> None:
        _accumulate(keys, ctx.state)


@dataclass(frozen=True)
class Rect:
    """RECT: keep only the top ``rect_keep_percent`` % entries of each update by relative change ``|Δ| / |W|``."""
    name: str = "rect"

    def prepare(self, layers, ctx) -> None:
        pass

    def process(self, deltas, weights, ctx):
        return {l: solvers.rect_mask(d, weights[l].to(d.device, d.dtype), ctx.cfg.rect_keep_percent)
                for l, d in deltas.items()}

    def finalize(self, model, state) -> dict[int, torch.Tensor]:
        return {}


@dataclass(frozen=True)
class Prune:
    """PRUNE: restrain the singular values of the accumulated edit ``W − W₀`` above ``σ_max(W₀)``.

    Paper form (default): after every batch, ``W ← W₀ + restrain(W + Δ − W₀)``.
    Reference form (``prune_reference=True``): batches are plain MEMIT and :meth:`finalize` applies
    ``W ← W + restrain(W − W₀)`` once after the last batch (the reference adds the restrained edit on
    top of the already-edited weight). Owns ``W₀`` (captured on the unedited model, CPU, float32).
    """
    name: str = "prune"

    def prepare(self, layers, ctx) -> None:
        ctx.state.prune_reference = ctx.cfg.prune_reference
        for l in layers:
            if l not in ctx.state.W0:
                ctx.state.W0[l] = math_weight(ctx.model, l).detach().to("cpu", torch.float32).clone()

    def process(self, deltas, weights, ctx):
        if ctx.cfg.prune_reference:
            return deltas
        out = {}
        for l, d in deltas.items():
            W = weights[l].to(d.device, torch.float64)
            W0 = ctx.state.W0[l].to(d.device, torch.float64)
            restrained = solvers.prune_restrain(W + d.to(torch.float64) - W0, solvers.top_singular_value(W0))
            out[l] = (W0 + restrained - W).to(d.dtype)
        return out

    def finalize(self, model, state) -> dict[int, torch.Tensor]:
        applied = {}
        if state.finalized or not state.W0 or not state.prune_reference:
            return applied
        with torch.no_grad():
            for l, W0 in state.W0.items():
                W = math_weight(model, l).detach().to(torch.float64)
                W0d = W0.to(W.device, torch.float64)
                d = solvers.prune_restrain(W - W0d, solvers.top_singular_value(W0d))
                applied[l] = d
            add_deltas(model, {l: d.to(torch.float32) for l, d in applied.items()})   # all or nothing
        state.finalized = True
        return applied


@dataclass(frozen=True)
class Method:
    """A named variant: ``solver`` + ``distribution`` (residual rule) + optional ``post`` step."""
    name: str
    base: str
    blue: bool
    solver: Solver
    post: PostProcess | None
    distribution: Distribution


def _parts(base: str, blue: bool) -> tuple[Solver, PostProcess | None]:
    return {"memit": (MemitSolver(False), None),
            "memit_seq": (MemitSolver(True, "memit_seq"), None),
            "alphaedit": (AlphaEditSolver(blue), None),
            "rect": (MemitSolver(False), Rect()),
            "prune": (MemitSolver(False), Prune())}[base]


def parse_method(name) -> Method:
    """``"memit"``, ``"alphaedit_blue"``, ``"MEMIT-BLUE"``, ... → :class:`Method`."""
    if isinstance(name, Method):
        return name
    key, base, rule = read_method(name)
    blue = rule != "even"
    solver, post = _parts(base, blue)
    return Method(key, base, blue, solver, post, {"even": Even, "boundary": Boundary, "dynamic": Dynamic}[rule]())
