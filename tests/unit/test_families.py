"""The edit-space contract, per family: what the closed form assumes, measured on a small random
model of every ``config.model_type`` bluebook accepts (float64).

The closed form writes ``Δ = R Kᵀ(…)⁻¹`` into the MLP output projection and counts on ``Δk`` arriving
unchanged where v* and ``h`` are measured. Pre-norm decoders add the MLP output straight into the
residual stream; Gemma-2/3 normalise it first, so for them the space is the MLP output. Here that is
checked by hand (hooks and a raw weight update, not bluebook's helpers), then end to end: after a
one-request edit with λ → 0 the measured space holds v*, and with the Gemma fix switched off
``bluebook.edit`` refuses the model before any statistics or v* work.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

import bluebook
from bluebook.model import specs
from bluebook.model.contract import write_space_error
from bluebook.model.loading import tiny_tokenizer
from bluebook.model.tiny import FAMILY_CONFIGS, tiny_family, tiny_family_with_tokenizer

POST_NORM = ("gemma2", "gemma3_text")


def _model(model_type, n_layers=4):
    model, tok = tiny_family_with_tokenizer(model_type, n_layers=n_layers)
    return model.double(), tok


def _moved(model, layer, module, seed=0):
    """By hand: ``‖(y₁ − y₀) − r‖ / ‖r‖`` for ``y`` the output of ``module`` at the last position,
    before and after ``W ← W + r kᵀ/(kᵀk)`` on the layer's projection (``k`` its input there)."""
    spec = specs.spec_for(model)
    proj = model.get_submodule(spec.proj_name(layer))
    got = {}
    h1 = proj.register_forward_pre_hook(lambda m, a: got.__setitem__("k", a[0][0, -1].clone()))
    h2 = model.get_submodule(module).register_forward_hook(
        lambda m, a, o: got.__setitem__("y", (o[0] if isinstance(o, tuple) else o)[0, -1].clone()))
    ids = torch.tensor([[5, 17, 301, 42, 9, 1200]])
    try:
        with torch.no_grad():
            model(input_ids=ids)
            k, y0 = got["k"], got["y"]
            r = torch.randn(y0.shape[0], generator=torch.Generator().manual_seed(seed), dtype=y0.dtype)
            delta = torch.outer(r, k) / (k @ k)                              # (d, m): Δk = r
            saved = proj.weight.detach().clone()
            proj.weight.add_(delta.T if spec.transposed else delta)
            try:
                model(input_ids=ids)
            finally:
                proj.weight.copy_(saved)
    finally:
        h1.remove()
        h2.remove()
    return float(((got["y"] - y0) - r).norm() / r.norm())


def test_every_accepted_family_has_a_tiny_model():
    assert set(specs.SPECS) == set(FAMILY_CONFIGS)


@pytest.mark.parametrize("model_type", sorted(specs.SPECS))
def test_update_moves_the_edit_space_by_exactly_delta_k(model_type):
    model, _ = _model(model_type)
    assert model.config.model_type == model_type
    spec = specs.spec_for(model)
    for layer in (0, 2, 3):
        assert _moved(model, layer, spec.out_name(layer)) < 1e-12
    # the library's own measurement agrees with the hand computation
    assert write_space_error(model, 2) < 1e-12


@pytest.mark.parametrize("model_type", POST_NORM)
def test_post_norm_block_output_is_not_moved_by_delta_k(model_type):
    """Why Gemma needs its own space: at the block output the same update is off by most of ‖r‖."""
    model, _ = _model(model_type)
    spec = specs.spec_for(model)
    assert not spec.edits_residual_stream
    assert _moved(model, 2, spec.block_name(2)) > 0.3
    assert write_space_error(model, 2, space=spec.block_name(2)) > 0.3


def _one_request_edit(model, tok, method, layers=(1, 3)):
    req = bluebook.EditRequest("The capital of {} is", "France", "Rome", "Paris")
    m = specs.key_dim(model)
    state = bluebook.SequentialState(stats={l: torch.eye(m, dtype=torch.float64) for l in range(4)})
    hp = {"layers": list(layers), "lam": 1e-9, "target": {"steps": 8, "lr": 0.5}}
    return req, bluebook.edit(model, tok, [req], method, hparams=hp, state=state, templates=(("{}",),),
                              progress=False)


def _space_at_subject(model, tok, req, layer):
    spec = specs.spec_for(model)
    text = req.prompt.replace("{}", req.subject)
    idx = len(tok(req.prompt[:req.prompt.index("{}")] + req.subject)["input_ids"]) - 1
    got = {}
    h = model.get_submodule(spec.out_name(layer)).register_forward_hook(
        lambda m, a, o: got.__setitem__("y", (o[0] if isinstance(o, tuple) else o)[0, idx].clone()))
    try:
        with torch.no_grad():
            model(**tok(text, return_tensors="pt"))
    finally:
        h.remove()
    return got["y"]


@pytest.mark.parametrize("method", ["memit", "memit_blue"])
@pytest.mark.parametrize("model_type", sorted(specs.SPECS))
def test_after_the_edit_the_measured_space_holds_v_star(model_type, method):
    """End to end: the last layer takes the whole remaining residual, so with λ → 0 and one request
    the space where v* was optimised holds v* once the edit is applied."""
    model, tok = _model(model_type)
    req, res = _one_request_edit(model, tok, method)
    L = max(res.targets)
    z = res.targets[L].z[0]
    before = _space_at_subject(model, tok, req, L)
    with res:
        after = _space_at_subject(model, tok, req, L)
    gap = float((z - before).norm())
    assert gap > 1e-3, "trivial edit"
    assert float((after - z).norm()) / gap < 1e-5


@pytest.mark.parametrize("model_type", POST_NORM)
def test_with_the_fix_switched_off_the_edit_misses_and_is_refused(model_type, monkeypatch, cache_dir):
    """Measuring Gemma at the block output (the layout bluebook used before) breaks the contract:
    ``edit`` refuses before any statistics or v* work; forced past the check, the edit misses v*."""
    import bluebook.editor.loop as loop

    broken = dataclasses.replace(specs.SPECS[model_type], out=None)
    monkeypatch.setitem(specs.SPECS, model_type, broken)
    model, tok = _model(model_type)
    for name in ("layer_stats", "optimize_targets"):
        monkeypatch.setattr(loop, name, lambda *a, **k: pytest.fail("expensive work started before the check"))
    with pytest.raises(ValueError, match=rf"model_type='{model_type}'.*edit-space contract at layer 1"):
        bluebook.edit(model, tok, [bluebook.EditRequest("The capital of {} is", "France", "Rome")], "memit_blue",
                      hparams={"layers": [1, 3]}, progress=False)
    monkeypatch.undo()
    monkeypatch.setitem(specs.SPECS, model_type, broken)
    monkeypatch.setattr(loop, "check_edit_space", lambda *a, **k: None)
    req, res = _one_request_edit(model, tok, "memit_blue")
    L = max(res.targets)
    z = res.targets[L].z[0]
    before = _space_at_subject(model, tok, req, L)
    with res:
        after = _space_at_subject(model, tok, req, L)
    assert float((after - z).norm()) / float((z - before).norm()) > 0.05


# ---------------------------------------------------------------- fail early, or need nothing
def _no_expensive_work(monkeypatch):
    import bluebook.editor.loop as loop
    for name in ("layer_stats", "optimize_targets", "read_states"):
        monkeypatch.setattr(loop, name, lambda *a, **k: pytest.fail("expensive work started before the check"))


REQ = bluebook.EditRequest("The capital of {} is", "France", "Rome", "Paris")


def test_bad_model_inputs_refused_before_any_statistics(monkeypatch):
    from transformers import BertConfig, BertModel
    _no_expensive_work(monkeypatch)
    model, tok = _model("qwen2")
    with pytest.raises(ValueError, match=r"contains layer 9, out of range for a 4-layer model \(0..3\)"):
        bluebook.edit(model, tok, [REQ], "memit", hparams={"layers": [1, 9]}, progress=False)
    small = tiny_family("mistral", vocab_size=1000)
    with pytest.raises(ValueError, match=r"has 2048 tokens but the model .* embeds only 1000"):
        bluebook.edit(small, tok, [REQ], "memit", hparams={"layers": [1, 2]}, progress=False)
    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    with pytest.raises(ValueError, match=r"unsupported config.model_type='bert'"):
        bluebook.edit(bert, tok, [REQ], "memit", progress=False)


def test_tokenizer_padding_side_and_pad_token_do_not_change_the_edit():
    """bluebook builds every padded batch from token ids, so a tokenizer that pads on the left, or
    has no pad token, edits exactly as one that pads on the right."""
    model, tok = _model("llama")
    reqs = [REQ, bluebook.EditRequest("{} plays the", "Miles Davis", "violin", "trumpet")]
    m = specs.key_dim(model)

    def run(t):
        state = bluebook.SequentialState(stats={l: torch.eye(m, dtype=torch.float64) for l in range(4)})
        return bluebook.edit(model, t, reqs, "memit", hparams={"layers": [1, 2], "lam": 1.0,
                                                              "target": {"steps": 4}},
                             state=state, templates=(("{}",), ("Therefore, {}", "It is known. {}")), progress=False)
    ref = run(tok)
    left, bare = tiny_tokenizer(), tiny_tokenizer()          # the same tokenizer _model gives llama
    left.padding_side = "left"
    bare.pad_token = None
    assert bare.pad_token_id is None
    for t in (left, bare):
        got = run(t)
        for l in ref.deltas:
            assert torch.equal(got.deltas[l], ref.deltas[l])


def test_the_contract_check_holds_for_a_model_left_in_training_mode():
    """Dropout would make the two passes differ; the check runs with it off and leaves the mode as it was."""
    model, _ = _model("gpt2")
    model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = 0.5
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.5
    model.train()
    assert write_space_error(model, 2) < 1e-12
    assert model.training
