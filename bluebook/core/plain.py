"""MEMIT and BLUE written out side by side, in the paper's symbols: read this first.

Both edit a batch of requests through the critical layers ``l_1 < … < l_L``. At a layer ``l``:

* ``Z``: the target hidden states v* (one column per request), found by gradient descent;
* ``K``: the keys, the edited projection's input at the subject's last token (``m × n``);
* ``h``: the current hidden state at the subject's last token (``d × n``), read on the model as it
  is *now*, i.e. holding the updates of the layers before ``l``;
* ``R``: the residual this layer is solved for;
* ``Δ = R Kᵀ (λC + K Kᵀ)⁻¹``: the closed-form update of ``W_out`` (:func:`memit_delta`, solved
  in float64), with ``C = E[k kᵀ]`` the layer's key statistics and ``λ`` their weight.

The two functions differ in two lines, marked ``# <-``: where the targets are optimised and the
residual rule. MEMIT optimises one target at the last layer ``L`` and gives layer ``l_i`` the
share ``(Z − h^L) / (L − i + 1)`` of what is left; BLUE updates only the first and last critical
layers, each with a target optimised at that layer itself and the whole residual ``Z − h^l``.

These are the algorithms and nothing else: the same primitives :func:`bluebook.edit` uses, without
its configuration, sequential state, other solvers, diagnostics and checks. ``tests/unit`` and
``tests/reference`` hold them equal to ``bluebook.edit(..., "memit")`` and ``"memit_blue"``.
``C`` is ``{layer: C}`` (e.g. from :func:`bluebook.core.stats.layer_stats`); ``templates`` the
context-template groups (:func:`bluebook.core.templates.context_templates`). Each returns ``{l: Δ}``
and leaves the model's weights as it found them (apply with :func:`bluebook.model.weights.add_deltas`).
"""
from __future__ import annotations

import torch

from bluebook.core.config import TargetConfig
from bluebook.core.keys import read_states
from bluebook.core.solvers import memit_delta
from bluebook.core.targets import plain_targets
from bluebook.model.weights import add_deltas, preserved_weights, restore_weights

BARE = (("{}",),)


def memit_edit(model, tok, requests, layers, C, lam, cfg=TargetConfig(), templates=BARE) -> dict[int, torch.Tensor]:
    """MEMIT: one target at the last critical layer, its residual spread evenly over the layers."""
    L = layers[-1]
    Z = plain_targets(model, tok, requests, L, cfg, templates).z.T        # <- v* at the last layer, once (d × n)
    Delta = {}
    with preserved_weights(model, layers) as saved:
        try:
            for i, l in enumerate(layers):                               # shallow to deep
                s = read_states(model, tok, requests, key_layers=[l], hidden_layers=[L], templates=templates)
                K, h = s.keys[l], s.hidden[L]                            # h at L: what is still missing there
                R = (Z - h) / (len(layers) - i)                          # <- this layer's share of it
                Delta[l] = memit_delta(K, R, C[l], lam)                  # Δ = R Kᵀ (λC + K Kᵀ)⁻¹
                add_deltas(model, {l: Delta[l]})                         # the later layers see this update
        finally:
            restore_weights(model, saved)
    return Delta


def blue_edit(model, tok, requests, layers, C, lam, cfg=TargetConfig(), templates=BARE) -> dict[int, torch.Tensor]:
    """BLUE: only the first and last critical layers, each with its own target and the whole residual."""
    Delta = {}
    with preserved_weights(model, layers) as saved:
        try:
            for l in (layers[0], layers[-1]):                            # the boundary layers only
                Z = plain_targets(model, tok, requests, l, cfg, templates).z.T   # <- v* at l itself, on the model now
                s = read_states(model, tok, requests, key_layers=[l], hidden_layers=[l], templates=templates)
                K, h = s.keys[l], s.hidden[l]                            # h at l
                R = Z - h                                                # <- the whole residual
                Delta[l] = memit_delta(K, R, C[l], lam)                  # Δ = R Kᵀ (λC + K Kᵀ)⁻¹
                add_deltas(model, {l: Delta[l]})                         # the later layers see this update
        finally:
            restore_weights(model, saved)
    return Delta
