"""The edit-space contract: what the closed form assumes about a model family, measured on the model.

Locate-then-edit solves ``Δ = R Kᵀ (…)⁻¹`` for the edited projection and counts on ``Δk`` arriving
unchanged in the space where the targets v* and the current states ``h`` were measured. This module
writes a rank-one ``Δ = r kᵀ / (kᵀk)`` into the projection of one layer and reads how far that space
moves at the key's position: by exactly ``r`` when the family's :class:`~bluebook.model.specs.ModelSpec`
names the right space, by something else when it does not (a Gemma block output moves by a
normalised, rotated ``r``, because ``post_feedforward_layernorm`` sits between the projection and
the residual sum).

:func:`write_space_error` measures it; :func:`check_write_space` refuses a model that breaks it,
naming the family and the reason. ``bluebook.edit`` calls the latter before any statistics or v* work.
"""
from __future__ import annotations

import torch

from bluebook.model.device import eval_mode, model_device
from bluebook.model.hooks import Trace
from bluebook.model.specs import check_layers, proj_weight, spec_for
from bluebook.model.weights import patched_weights

#: Relative error ``‖moved − r‖ / ‖r‖`` tolerated per weight dtype: round-off of one forward pass,
#: far below the 0.7 a post-norm block output is off by (tests/unit/test_families.py).
TOLERANCE = {torch.float64: 1e-8, torch.float32: 1e-3, torch.bfloat16: 5e-2, torch.float16: 2e-2}


def _probe_ids(model, n_tokens: int) -> torch.Tensor:
    """A short fixed token sequence inside the vocabulary (no tokenizer needed)."""
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = (torch.arange(n_tokens) * 7919 + 11) % max(vocab - 1, 1) + 1
    return ids[None].to(model_device(model))


@torch.no_grad()
def write_space_error(model, layer: int, *, space: str | None = None, n_tokens: int = 6, seed: int = 0) -> float:
    """``‖(y₁ − y₀) − r‖ / ‖r‖`` at the last of ``n_tokens`` positions, where ``y`` is the output of
    module ``space`` (default: the family's edit space at ``layer``) before (``y₀``) and after
    (``y₁``) writing ``Δ = r kᵀ / (kᵀk)`` into ``layer``'s projection; ``k`` is the projection's input
    there and ``r`` a random direction as long as ``y₀``. The weights are restored on return."""
    layer = check_layers(model, [layer], field="layer")[0]
    spec = spec_for(model)
    space = space or spec.out_name(layer)
    proj = spec.proj_name(layer)
    ids = _probe_ids(model, n_tokens)
    with eval_mode(model), Trace(model, [proj], inputs=True, outputs=False) as tin, \
            Trace(model, [space], stop_after=space) as t0:       # dropout off: both passes must be the same
        t0.run(model.base_model, input_ids=ids)
    k = tin.inputs[proj][0, -1].double().cpu()
    y0 = t0.outputs[space][0, -1].double().cpu()
    gen = torch.Generator().manual_seed(seed)
    r = torch.randn(y0.shape[0], generator=gen, dtype=torch.float64)
    r = r * (y0.norm().clamp_min(1.0) / r.norm())
    delta = torch.outer(r, k) / (k @ k)                       # (d, m): Δk = r
    with patched_weights(model, {layer: delta}), eval_mode(model):
        with Trace(model, [space], stop_after=space) as t1:
            t1.run(model.base_model, input_ids=ids)
        y1 = t1.outputs[space][0, -1].double().cpu()
    return float(((y1 - y0) - r).norm() / r.norm())


def check_write_space(model, layer: int) -> None:
    """Refuse a model whose edit space at ``layer`` does not move by ``Δk`` under an update ``Δ`` of
    its projection, naming the family and the reason (before any expensive work)."""
    spec = spec_for(model)
    dtype = proj_weight(model, layer).dtype
    err = write_space_error(model, layer)
    tol = TOLERANCE.get(dtype, 5e-2)
    if not err <= tol:
        where = "block output (residual stream)" if spec.edits_residual_stream else f"module {spec.out_name(layer)!r}"
        raise ValueError(
            f"config.model_type={model.config.model_type!r} (family {spec.family!r}) breaks the edit-space contract "
            f"at layer {layer}: an update Δ written into {spec.proj_name(layer)!r} moves the {where}, where v* and h "
            f"are measured, by Δk with a relative error of {err:.3g} (tolerance {tol:g} for {dtype}). The closed form "
            "would then solve for the wrong space. This happens when something (e.g. a norm) sits between the "
            "projection and that space; name the module that receives the projection's output unchanged in "
            "ModelSpec.out for this family (bluebook.model.specs).")


def check_edit_space(model, layers) -> None:
    """:func:`check_write_space` at the first and last of ``layers`` (the contract belongs to the
    family, so two layers of the plan suffice; each check is one short forward pass)."""
    layers = sorted(layers)
    for layer in dict.fromkeys((layers[0], layers[-1])):
        check_write_space(model, layer)
