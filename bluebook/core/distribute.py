"""Residual-distribution strategies: which layers an edit updates, where each layer's target v*
is optimised, and how much of the residual each layer takes.

* :class:`Even` (MEMIT and its descendants): one target at the last critical layer ``L``; layer
  ``l_i`` takes ``(Z − h^L) / (N_L − i)``, with ``h^L`` re-measured on the partly edited model.
* :class:`Boundary` (BLUE): only the first and last critical layers; at each, a fresh target is
  optimised at that layer on the current (partly edited) model and the full residual is used.
* :class:`Direct`: every critical layer, each with its own fresh target (the optimisation-steps
  analysis of the paper, §10.4).
* :class:`SingleLayer`: only one layer, with either its distributed or its direct residual (the
  paper's single-layer comparison, §10.3).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Distribution(Protocol):
    """A residual rule ``R``: the layers updated, where each one's target is optimised, how much
    of the residual ``Z − h`` each takes. ``layers`` are the critical layers, ``plan`` the updated ones."""
    name: str

    def plan(self, layers: list[int]) -> list[int]:
        """The layers to update, in order (each sees the updates of the ones before it)."""
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


@dataclass(frozen=True)
class Even:
    name: str = "even"

    def plan(self, layers: list[int]) -> list[int]:
        return list(layers)

    def target_layer(self, i: int, plan: list[int], layers: list[int]) -> int | None:
        """Layer at which to optimise v* before updating ``plan[i]`` (None: reuse the last target)."""
        return layers[-1] if i == 0 else None

    def measure_layer(self, i: int, plan: list[int], layers: list[int]) -> int:
        return layers[-1]

    def residual(self, diff: torch.Tensor, i: int, plan: list[int], layers: list[int]) -> torch.Tensor:
        return diff / (len(layers) - layers.index(plan[i]))


@dataclass(frozen=True)
class Boundary:
    name: str = "boundary"

    def plan(self, layers: list[int]) -> list[int]:
        if len(layers) < 2:
            raise ValueError(f"BLUE needs at least two critical layers, got {layers}")
        return [layers[0], layers[-1]]

    def target_layer(self, i, plan, layers):
        return plan[i]

    def measure_layer(self, i, plan, layers):
        return plan[i]

    def residual(self, diff, i, plan, layers):
        return diff


@dataclass(frozen=True)
class Direct(Boundary):
    name: str = "direct"

    def plan(self, layers):
        return list(layers)


@dataclass(frozen=True)
class SingleLayer:
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
        return diff if self.direct else diff / (len(layers) - layers.index(self.layer))
