"""Where a model lives and how it is run: its device, evaluation mode, and the ``"auto"`` device rule."""
from __future__ import annotations

import contextlib

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_device(model) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model):
    """Run with dropout off; restore the caller's train/eval mode afterwards."""
    was_training = bool(getattr(model, "training", False))
    if was_training:
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def check_materialized(model) -> None:
    """Refuse a model whose weights are not loaded (on the ``meta`` device), before any work."""
    meta = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if meta:
        raise ValueError(f"the model's weights are on the 'meta' device ({len(meta)} tensors, e.g. {meta[0]!r}): "
                         "they were never loaded. Load the model with its weights (bluebook.load_model, or "
                         "from_pretrained without device_map='meta') before editing")
    devices = sorted({str(p.device) for _, p in model.named_parameters()})
    if len(devices) > 1:
        first = {}
        for n, p in model.named_parameters():
            first.setdefault(str(p.device), n)
        where = ", ".join(f"{d} (e.g. {first[d]!r})" for d in devices)
        raise ValueError(f"the model's weights are split across devices: {where}. bluebook edits a model held on "
                         "one device (statistics, keys, targets and updates meet in one place); load it without "
                         "device_map='auto' and move it with model.to(device), on a device with room for it")
