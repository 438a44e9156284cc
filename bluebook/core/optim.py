"""One step of the v* optimisation, shared by the plain loop, the long-form loop and the fast engine.

:func:`adam_clamp_step` is Adam with ``torch.optim.Adam``'s defaults — the same operations in the
same order as its single-tensor update, so the plain loop steps exactly as ``torch.optim.Adam``
would — followed by the norm clamp ``‖δ‖ ≤ clamp_norm_factor · ‖h‖``. :func:`finished` is the
early-stop rule. Every row of a 2-D ``delta`` is one request's δ, stepped as if it were alone: the
fast engine steps a whole batch with the same call the plain loop makes for one request.
"""
from __future__ import annotations

import torch

# torch.optim.Adam's defaults
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


@torch.no_grad()
def adam_clamp_step(delta: torch.Tensor, m: torch.Tensor, v: torch.Tensor, grad: torch.Tensor, t: int, lr: float,
                    max_norm) -> None:
    """In place: Adam's ``t``-th step (1-based) on each row of ``delta`` with its moments ``m`` and
    ``v``, then each row's norm clamped to ``max_norm`` (a tensor broadcast against the rows' norms)."""
    m.lerp_(grad, 1 - BETA1)
    v.mul_(BETA2).addcmul_(grad, grad, value=1 - BETA2)
    step_size = lr / (1 - BETA1 ** float(t))
    denom = (v.sqrt() / (1 - BETA2 ** float(t)) ** 0.5).add_(EPS)
    delta.addcdiv_(m, denom, value=-step_size)
    norm = delta.norm(dim=-1, keepdim=True)
    delta.mul_(torch.where(norm > max_norm, max_norm / norm, torch.ones_like(norm)))


def finished(loss: float, it: int, cfg) -> int | None:
    """The step count to report if an optimisation whose loss at iteration ``it`` is ``loss`` ends
    there: ``it`` (the gradient steps taken) once the loss is below ``cfg.early_stop``, all
    ``cfg.steps`` at the last iteration (no step follows the last evaluation); None: go on."""
    if loss < cfg.early_stop:
        return it
    return cfg.steps if it == cfg.steps - 1 else None
