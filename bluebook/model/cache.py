"""The key/value cache of a transformers forward pass, across transformers versions."""
from __future__ import annotations

import inspect


def cache_kwarg(model) -> str:
    """Name of the key/value-cache argument of ``model.forward`` (or its base model's):
    ``cache`` in late transformers 5.x, ``past_key_values`` before."""
    base = getattr(model, "base_model", model)
    for m in (model, base):
        try:
            if "cache" in inspect.signature(m.forward).parameters:
                return "cache"
        except (TypeError, ValueError):
            continue
    return "past_key_values"


def returned_cache(out):
    """The cache a forward pass returned (``out.cache`` or ``out.past_key_values``; None if neither)."""
    c = getattr(out, "cache", None)
    return c if c is not None else getattr(out, "past_key_values", None)
