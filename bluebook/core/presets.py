"""Choosing a preset for a model from its architecture config (never from its name or path)."""
from __future__ import annotations

from bluebook.core.config import EditConfig, load_preset, with_overrides
from bluebook.model.specs import num_layers, spec_for

#: (family, n_layers, hidden size) -> preset file
KNOWN = {
    ("llama", 30, 576): "smollm2-135m",
    ("llama", 32, 4096): "llama3-8b",
    ("gpt2", 48, 1600): "gpt2-xl",
    ("gptj", 28, 4096): "gpt-j-6b",
    ("gemma", 18, 640): "gemma3-270m",
}


def preset_name(model) -> str | None:
    spec = spec_for(model)
    cfg = model.config
    d = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", None)
    return KNOWN.get((spec.family, num_layers(model), d))


def preset_for(model, method: str | None = None, **overrides) -> EditConfig:
    """The preset matching the model's architecture; otherwise the generic one, with a critical-layer
    window scaled to the model's depth (layers at ~13–27 % of depth, as in the paper's models)."""
    name = preset_name(model)
    if name is not None:
        return load_preset(name, method, **overrides)
    return generic_preset(model, method, **overrides)


def generic_preset(model, method: str | None = None, **overrides) -> EditConfig:
    """The generic preset with its critical-layer window scaled to the model's depth (what
    :func:`preset_for` gives a model without a measured preset)."""
    n = num_layers(model)
    if n <= 2:
        layers = list(range(n))
    else:
        first = max(0, round(0.13 * n))
        last = min(n - 2, max(first + 1, round(0.27 * n)))
        layers = list(range(first, last + 1))
    cfg = load_preset("generic", method)
    return with_overrides(cfg, layers=layers, **overrides)
