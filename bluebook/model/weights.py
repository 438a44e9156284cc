"""The one home for copying, patching and restoring the edited projection weights.

Every edit changes only the MLP output projections ``W_out`` of some blocks. Snapshots copy their raw
storage (whatever the layout and dtype), and restoring copies it back, so a restore is bit-exact
rather than a subtraction of the update.
"""
from __future__ import annotations

import contextlib
from typing import Iterable

import torch

from bluebook.model.specs import num_layers, proj_weight, to_storage


def snapshot_weights(model, layers: Iterable[int] | None = None, device=None) -> dict[int, torch.Tensor]:
    """Copies of the edited projection weights (raw storage layout); ``layers=None``: every block.
    ``device``: where the copies live (default: beside the weights; ``"cpu"`` spares accelerator memory)."""
    layers = range(num_layers(model)) if layers is None else layers
    return {int(l): proj_weight(model, l).detach().to(device, copy=True) for l in layers}


def restore_weights(model, snapshot: dict[int, torch.Tensor]) -> None:
    """Copy a :func:`snapshot_weights` back, bit-exactly (from whichever device the copies are on)."""
    with torch.no_grad():
        for l, w in snapshot.items():
            proj_weight(model, l).copy_(w)


def add_deltas(model, deltas: dict[int, torch.Tensor]) -> None:
    """``W_l ← W_l + Δ_l`` for math-layout updates ``{layer: Δ (d×m)}`` (cast to the weight's layout).

    All or nothing: every sum is formed first, and if any holds a NaN/inf (a diverged update, or one
    that overflows a half-precision weight) a ``FloatingPointError`` names the layer and no weight
    is changed."""
    with torch.no_grad():
        new = {}
        for l, d in deltas.items():
            W = proj_weight(model, l)
            upd = W + to_storage(d, model, l)
            if not torch.isfinite(upd).all():
                bad = int((~torch.isfinite(upd)).sum())
                raise FloatingPointError(
                    f"layer {l}: W + Δ has {bad} NaN/inf entries in {W.dtype} (max |Δ| = "
                    f"{float(d.detach().abs().max()):.3g}); no weight was changed")
            new[l] = upd
        for l, upd in new.items():
            proj_weight(model, l).copy_(upd)


@contextlib.contextmanager
def preserved_weights(model, layers: Iterable[int]):
    """Yield a snapshot of ``layers``; if the body raises, restore it bit-exactly and re-raise."""
    saved = snapshot_weights(model, layers)
    try:
        yield saved
    except BaseException:
        restore_weights(model, saved)
        raise


@contextlib.contextmanager
def patched_weights(model, deltas: dict[int, torch.Tensor]):
    """Add math-layout updates ``{layer: Δ}`` inside the block; the original weights are copied
    first and copied back on exit (also when the body raises)."""
    saved = snapshot_weights(model, deltas)
    try:
        add_deltas(model, deltas)
        yield model
    finally:
        restore_weights(model, saved)


def update_norms(snapshot: dict[int, torch.Tensor], model) -> dict[int, float]:
    """Frobenius norm ``‖W_now − W_snapshot‖_F`` per snapshot layer."""
    return {l: float((proj_weight(model, l).detach().double() - w.double()).norm()) for l, w in snapshot.items()}


def weights_changed(snapshot: dict[int, torch.Tensor], model) -> list[int]:
    """Layers whose projection weight differs (in any element) from ``snapshot``."""
    return sorted(l for l, w in snapshot.items() if not torch.equal(proj_weight(model, l).detach(), w))
