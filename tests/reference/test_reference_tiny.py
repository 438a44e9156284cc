"""bluebook.edit against the plain transcriptions in reference.py, on tiny random float64 models.

The statistics C and the context templates are inputs, given identically to both sides. On a
float64 model bluebook computes v*, keys, hidden states and solves in float64, so both checks hold
to 1e-8 relative (measured 1e-14 to 2e-13 per layer):

* end to end: each side optimises its own v* and runs its own loop;
* the layer loop and closed forms given bluebook's own v* (isolates the loop from v*).
"""
from __future__ import annotations

import functools

import pytest
import torch

import bluebook

import reference as ref
from ref_support import family_model, random_token_moments, rel

# the three shipped tiny models, and a small random model of every other family bluebook accepts
FAMILIES = ("tiny-gpt2", "tiny-gptj", "tiny-llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text")
METHODS = ("memit", "memit_blue", "alphaedit", "alphaedit_blue")
N_LAYERS, LAYERS = 5, (1, 2, 3)
HP = ref.TargetHP(steps=6, lr=0.5)
LAM, ALPHA, ALPHA_BLUE = 50.0, 0.1, 0.3
E2E_TOL = 1e-8
# Gemma-2's attention takes its softmax in float32 even in a float64 model, so two ways of batching
# the same positions (bluebook's prefix cache, the reference's full passes) agree to float32 round-off
E2E_TOL_FAMILY = {"gemma2": 1e-6}
LOOP_TOL = 1e-8
TEMPLATES = (("{}",), ("The weather was fine. {}", "Therefore, {}", "Because of this, {}"))
REQUESTS = (
    bluebook.EditRequest("The capital of {} is", "France", "Rome", "Paris"),
    bluebook.EditRequest("{} plays the", "Miles Davis", "violin", "trumpet"),
    bluebook.EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", "French"),
)


def hparams(threshold):
    return {"layers": list(LAYERS), "lam": LAM, "alpha": ALPHA, "alpha_blue": ALPHA_BLUE,
            "nullspace_threshold": threshold,
            "target": {"steps": HP.steps, "lr": HP.lr, "kl_factor": HP.kl_factor,
                       "weight_decay": HP.weight_decay, "clamp_norm_factor": HP.clamp_norm_factor,
                       "early_stop": HP.early_stop}}


@functools.lru_cache(maxsize=None)
def family_setup(family):
    torch.manual_seed(0)
    model, tok = family_model(family, n_layers=N_LAYERS)
    model = model.double()
    C = random_token_moments(model, LAYERS)
    # null-space threshold between the two middle eigenvalues of the first layer's C, so that P is
    # a proper projector (about half the key space), far from any eigenvalue of every layer
    ev = torch.linalg.eigvalsh(C[LAYERS[0]])
    thr = float((ev[len(ev) // 2 - 1] * ev[len(ev) // 2]).sqrt())
    for l in LAYERS:
        gap = (torch.linalg.eigvalsh(C[l]) / thr).log().abs().min()
        assert gap > 1e-4, f"threshold too close to an eigenvalue of C at layer {l}"
    return model, tok, C, thr


def ref_edit(family, method, given_targets=None, C_p=None, requests=REQUESTS, model=None):
    m, tok, C, thr = family_setup(family)
    alpha = ALPHA_BLUE if method.endswith("_blue") else ALPHA
    return ref.edit(model or m, tok, list(requests), method, LAYERS, TEMPLATES, HP, C, lam=LAM, alpha=alpha,
                    threshold=thr, C_p=C_p, given_targets=given_targets)


def bb_edit(family, method, state=None, requests=REQUESTS, model=None, **kw):
    m, tok, C, thr = family_setup(family)
    state = state or bluebook.SequentialState(stats={l: C[l].clone() for l in LAYERS})
    return bluebook.edit(model or m, tok, list(requests), method, hparams=hparams(thr), state=state,
                         templates=TEMPLATES, progress=False, **kw)


@functools.lru_cache(maxsize=None)
def both(family, method):
    res = bb_edit(family, method)
    e2e = ref_edit(family, method)
    loop = ref_edit(family, method, given_targets={l: t.z.T for l, t in res.targets.items()})
    return res, e2e, loop


def plan(method):
    return [LAYERS[0], LAYERS[-1]] if method.endswith("_blue") else list(LAYERS)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_end_to_end_matches_reference(family, method):
    res, r, _ = both(family, method)
    assert sorted(res.deltas) == sorted(r.deltas) == plan(method)
    for l, D in r.deltas.items():
        assert D.norm() > 1e-4 and r.residuals[l].norm() > 1e-3, "trivial edit"
        assert res.deltas[l].shape == D.shape
        err = rel(res.deltas[l], D)
        assert err < E2E_TOL_FAMILY.get(family, E2E_TOL), f"layer {l}: Δ differs by {err:.3g}"
    assert sorted(res.targets) == sorted(r.targets)
    for l, (Z, steps) in r.targets.items():
        assert res.targets[l].steps == steps
        err = rel(res.targets[l].z.T, Z)
        assert err < E2E_TOL_FAMILY.get(family, E2E_TOL), f"v* at layer {l} differs by {err:.3g}"
    first = plan(method)[0]            # read on the unedited model: only round-off apart
    assert rel(res.keys[first], r.keys[first]) < LOOP_TOL


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_layer_loop_matches_reference_given_targets(family, method):
    res, _, r = both(family, method)
    assert sorted(res.deltas) == sorted(r.deltas) == plan(method)
    for l, D in r.deltas.items():
        for what, a, b in (("K", res.keys[l], r.keys[l]), ("R", res.residuals[l], r.residuals[l]),
                           ("Δ", res.deltas[l], D)):
            err = rel(a, b)
            assert err < LOOP_TOL, f"layer {l}: {what} differs by {err:.3g}"


@pytest.mark.parametrize("family", FAMILIES)
def test_alphaedit_projector_matches_reference(family):
    _, _, C, thr = family_setup(family)
    state = bluebook.SequentialState(stats={l: C[l].clone() for l in LAYERS})
    bb_edit(family, "alphaedit", state=state)
    for l in LAYERS:
        P = ref.nullspace_projector(C[l], thr)
        rank = round(float(P.trace()))
        assert 0 < rank < P.shape[0]
        assert rel(state.projectors[l], P) < LOOP_TOL


@pytest.mark.parametrize("method", ("alphaedit", "alphaedit_blue"))
def test_alphaedit_second_batch_uses_accumulated_keys(method):
    """Two sequential batches: after the first, C_p = K Kᵀ with keys read on the edited model."""
    family = "tiny-llama"
    _, tok, C, _ = family_setup(family)
    model, _ = family_model(family, n_layers=N_LAYERS)   # a private copy: this test edits it
    model = model.double()
    with torch.no_grad():
        for p, q in zip(model.parameters(), family_setup(family)[0].parameters()):
            p.copy_(q)
    first, second = REQUESTS[:2], REQUESTS[2:]
    state = bluebook.SequentialState(stats={l: C[l].clone() for l in LAYERS})
    bb_edit(family, method, state=state, requests=first, model=model, apply=True)
    edited = plan(method)
    C_p = {l: (lambda K: K @ K.T)(ref.compute_keys(model, tok, list(first), l, TEMPLATES).double()) for l in edited}
    assert sorted(state.C_p) == edited
    for l in edited:
        assert rel(state.C_p[l], C_p[l]) < LOOP_TOL
    res = bb_edit(family, method, state=state, requests=second, model=model)
    r = ref_edit(family, method, C_p=C_p, requests=second, model=model,
                 given_targets={l: t.z.T for l, t in res.targets.items()})
    r0 = ref_edit(family, method, requests=second, model=model,     # what forgetting C_p would give
                  given_targets={l: t.z.T for l, t in res.targets.items()})
    for l, D in r.deltas.items():
        assert rel(r0.deltas[l], D) > 1e-3, "C_p makes no difference here: the test would not notice it"
        err = rel(res.deltas[l], D)
        assert err < LOOP_TOL, f"layer {l}: Δ differs by {err:.3g}"


def test_float64_model_gives_float64_deltas_within_1e_8():
    res, _, r = both("tiny-gpt2", "memit")
    for l, D in r.deltas.items():
        assert res.deltas[l].dtype == torch.float64
        assert rel(res.deltas[l], D) < 1e-8
