"""The short forms in bluebook/core/plain.py against bluebook.edit, on tiny random float64 models.

``memit_edit`` and ``blue_edit`` are the teaching versions of the paper's two methods; the edit
loop is the one everything else runs. Given the same statistics C, templates and target settings
(both on the plain v* loop), their updates agree per layer to 1e-10 relative (measured: identical).
A wrong divisor in MEMIT's share, a BLUE target optimised at the last layer only, or a BLUE that
updates every critical layer, each moves some layer's Δ by far more than that.
"""
from __future__ import annotations

import functools

import pytest
import torch

import bluebook
from bluebook.core.config import TargetConfig
from bluebook.core.plain import blue_edit, memit_edit

from ref_support import family_model, random_token_moments, rel

# the shipped tiny models, and a small random model of a Llama-layout family and of a post-norm one
FAMILIES = ("tiny-gpt2", "tiny-gptj", "tiny-llama", "qwen3", "gemma3_text")
LAYERS, LAM, TOL = (1, 2, 3), 50.0, 1e-10
TARGET = TargetConfig(steps=6, lr=0.5, engine="plain")
TEMPLATES = (("{}",), ("The weather was fine. {}", "Therefore, {}"))
REQUESTS = (
    bluebook.EditRequest("The capital of {} is", "France", "Rome", "Paris"),
    bluebook.EditRequest("{} plays the", "Miles Davis", "violin", "trumpet"),
)


@functools.lru_cache(maxsize=None)
def setup(family):
    torch.manual_seed(0)
    model, tok = family_model(family, n_layers=5)
    model = model.double()
    return model, tok, random_token_moments(model, LAYERS)


@pytest.mark.parametrize(("short", "method"), [(memit_edit, "memit"), (blue_edit, "memit_blue")])
@pytest.mark.parametrize("family", FAMILIES)
def test_plain_forms_equal_the_edit_loop(family, short, method):
    model, tok, C = setup(family)
    before = {n: p.clone() for n, p in model.named_parameters()}
    got = short(model, tok, list(REQUESTS), list(LAYERS), C, LAM, TARGET, TEMPLATES)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters()), "weights not restored"
    hp = {"layers": list(LAYERS), "lam": LAM, "target": {"steps": TARGET.steps, "lr": TARGET.lr, "engine": "plain"}}
    res = bluebook.edit(model, tok, list(REQUESTS), method, hparams=hp, templates=TEMPLATES, progress=False,
                        state=bluebook.SequentialState(stats={l: C[l].clone() for l in LAYERS}))
    assert sorted(got) == sorted(res.deltas) == ([1, 3] if method == "memit_blue" else [1, 2, 3])
    for l, D in res.deltas.items():
        assert D.dtype == torch.float64 and D.norm() > 1e-4, "trivial edit"
        err = rel(got[l], D)
        assert err < TOL, f"layer {l}: Δ differs by {err:.3g}"
