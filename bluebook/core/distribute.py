"""Residual-distribution strategies: which layers an edit updates, where each layer's target v*
is optimised, and how much of the residual each layer takes.

* :class:`Even` (MEMIT and its descendants): one target at the last critical layer ``L``; layer
  ``l_i`` takes ``(Z − h^L) / (N_L − i)``, with ``h^L`` re-measured on the partly edited model.
* :class:`Boundary` (BLUE): only the first and last critical layers; at each, a fresh target is
  optimised at that layer on the current (partly edited) model and the full residual is used.
* :class:`Dynamic` (beyond the paper, ``<base>_blue_dynamic``): BLUE's first layer, then the second
  updated layer chosen per batch from a measurement on the partly edited model (:meth:`Dynamic.choose`).
* :class:`Direct`: every critical layer, each with its own fresh target (the optimisation-steps
  analysis of the paper, §10.4).
* :class:`SingleLayer`: only one layer, with either its distributed or its direct residual (the
  paper's single-layer comparison, §10.3).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


def boundary_pair(layers, chosen=None) -> tuple[int, int]:
    """BLUE's two layers: ``chosen`` (a preset's ``blue_layers``) if given, else the first and the
    last of the critical ``layers``."""
    if chosen is not None:
        if len(chosen) != 2:
            raise ValueError(f"blue_layers must hold exactly two layers, got {list(chosen)}")
        return tuple(sorted(chosen))
    if len(layers) < 2:
        raise ValueError(f"BLUE needs at least two critical layers, got layers={list(layers)}")
    return (min(layers), max(layers))


def memit_share(residual: torch.Tensor, distance: int) -> torch.Tensor:
    """MEMIT's residual rule: the share ``R / (D + 1)`` of the residual ``R`` measured at the last
    critical layer that a layer ``D`` critical layers before the last takes (the last: all of it)."""
    return residual / (distance + 1)


def distance_to_last(layer: int, layers: list[int]) -> int:
    """How many critical ``layers`` come after ``layer`` (``L − l`` for a contiguous window)."""
    return len(layers) - 1 - layers.index(layer)


@runtime_checkable
class Distribution(Protocol):
    """A residual rule ``R``: the layers updated, where each one's target is optimised, how much
    of the residual ``Z − h`` each takes. ``layers`` are the critical layers the rule works over
    (:meth:`window`); ``plan`` the layers updated so far, ending with the one being updated
    (``plan[i]``, the ``i``-th update)."""
    name: str

    def window(self, layers: list[int], blue_layers=None) -> list[int]:
        """The critical layers this rule works over, from the configured window ``layers`` (and
        BLUE's ``blue_layers``, when given)."""
        ...

    def plan(self, layers: list[int]) -> list[int]:
        """Every layer the rule may update, in order (each sees the updates of the ones before it)."""
        ...

    def next_layer(self, i: int, chosen: list[int], layers: list[int], gap) -> int | None:
        """The layer to update ``i``-th, after the ones ``chosen`` so far, or None when done. A fixed
        rule walks its :meth:`plan`; a choosing one (:class:`Dynamic`) may call ``gap(l)``, which
        optimises v* at ``l`` on the model as it is now and returns the remaining relative gap."""
        ...

    def target_layer(self, i: int, plan: list[int], layers: list[int]) -> int | None:
        """Layer at which to optimise v* before updating ``plan[i]`` (None: reuse the last target)."""
        ...

    def measure_layer(self, i: int, plan: list[int], layers: list[int]) -> int:
        """Layer whose current hidden state ``h`` the residual ``Z − h`` is measured at."""
        ...

    def residual(self, diff: torch.Tensor, i: int, plan: list[int], layers: list[int]) -> torch.Tensor:
        """The residual ``plan[i]`` is solved for, from ``diff = Z − h`` (``d × n``)."""
        ...


class FixedPlan:
    """The window and the order of a rule that updates its :meth:`plan`, every layer of it, in order."""

    def window(self, layers, blue_layers=None) -> list[int]:
        return list(layers)

    def next_layer(self, i: int, chosen: list[int], layers: list[int], gap) -> int | None:
        plan = self.plan(layers)
        return plan[i] if i < len(plan) else None


@dataclass(frozen=True)
class Even(FixedPlan):
    name: str = "even"

    def plan(self, layers: list[int]) -> list[int]:
        return list(layers)

    def target_layer(self, i: int, plan: list[int], layers: list[int]) -> int | None:
        """Layer at which to optimise v* before updating ``plan[i]`` (None: reuse the last target)."""
        return layers[-1] if i == 0 else None

    def measure_layer(self, i: int, plan: list[int], layers: list[int]) -> int:
        return layers[-1]

    def residual(self, diff: torch.Tensor, i: int, plan: list[int], layers: list[int]) -> torch.Tensor:
        return memit_share(diff, distance_to_last(plan[i], layers))


@dataclass(frozen=True)
class Boundary(FixedPlan):
    name: str = "boundary"

    def window(self, layers, blue_layers=None) -> list[int]:
        return list(boundary_pair(layers, blue_layers))

    def plan(self, layers: list[int]) -> list[int]:
        return list(boundary_pair(layers))

    def target_layer(self, i, plan, layers):
        return plan[i]

    def measure_layer(self, i, plan, layers):
        return plan[i]

    def residual(self, diff, i, plan, layers):
        return diff


@dataclass(frozen=True)
class Direct(Boundary):
    name: str = "direct"

    def window(self, layers, blue_layers=None):
        return list(layers)

    def plan(self, layers):
        return list(layers)


@dataclass(frozen=True)
class SingleLayer(FixedPlan):
    """Update only ``layer``; ``direct=False``: MEMIT's distributed share of the last-layer residual."""
    layer: int = 0
    direct: bool = False
    name: str = "single"

    def plan(self, layers):
        if self.layer not in layers:
            raise ValueError(f"single layer {self.layer} is not among the critical layers {layers}")
        return [self.layer]

    def target_layer(self, i, plan, layers):
        return self.layer if self.direct else layers[-1]

    def measure_layer(self, i, plan, layers):
        return self.layer if self.direct else layers[-1]

    def residual(self, diff, i, plan, layers):
        return diff if self.direct else memit_share(diff, distance_to_last(self.layer, layers))


@dataclass(frozen=True)
class Dynamic(Boundary):
    """BLUE with its second layer chosen per batch, among the critical layers after the first.

    The paper fixes BLUE's two layers at the window's boundary and leaves open whether they should
    be chosen dynamically. This rule keeps the first (the paper's step analysis, §10.4, and the
    contribution scores of notebook 04 both find the first layer doing most of the work) and, once
    it is updated, asks every later critical layer ``l`` how much is left to do there: v* is
    optimised at ``l`` on the partly edited model (BLUE's own second optimisation, with its budget
    and early stop) and the remaining gap ``‖v*_l − h_l‖ / ‖h_l‖`` (mean over the batch) is read off
    it. The layer with the largest gap is updated, with the target already optimised there; ties,
    and a batch with nothing left anywhere, go to the deepest layer, i.e. to fixed BLUE.

    Cost: one extra v* optimisation per critical layer between the boundaries, each usually stopped
    early (the first update moved most of the way); the edit loop reports it as ``timings["choice"]``.
    ``plan`` names every layer that *may* be updated (statistics, projectors and saved weights are
    prepared for all of them); :meth:`choose` names the ones that are.
    """
    name: str = "dynamic"
    criterion: str = "largest_gap"

    def __post_init__(self):
        if self.criterion != "largest_gap":
            raise ValueError(f"criterion must be 'largest_gap', got {self.criterion!r}")

    def window(self, layers, blue_layers=None):
        return list(layers)

    def plan(self, layers):
        boundary_pair(layers)                 # at least two layers, as BLUE
        return list(layers)

    def next_layer(self, i, chosen, layers, gap):
        return self.choose(i, chosen, layers, gap)

    def choose(self, i: int, chosen: list[int], layers: list[int], gap) -> int | None:
        """The layer to update ``i``-th, given the ones ``chosen`` so far, or None when done.
        ``gap(l)`` optimises v* at ``l`` on the model as it is now and returns the remaining
        relative gap there (the edit loop keeps that target for the layer it then updates)."""
        if i == 0:
            return layers[0]
        if i > 1:
            return None
        later = [l for l in layers if l > chosen[0]]
        gaps = {l: float(gap(l)) for l in later}
        best = max(gaps.values())
        return max(l for l in later if gaps[l] >= best - TIE * max(1.0, best))   # ties: the deepest


#: Gaps this close (relative) count as equal in :meth:`Dynamic.choose` (v*'s norm clamp makes
#: saturated gaps equal up to round-off).
TIE = 1e-6
