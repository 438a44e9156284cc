"""The embedded model end to end: loading, knowledge, and a MEMIT edit through the public API."""
import pytest
import torch

import bluebook
from bluebook.model.specs import proj_weight

pytestmark = pytest.mark.model


def _probs(model, tok, prompt, words):
    enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        p = torch.softmax(model(**enc).logits[0, -1].float(), -1)
    return {w: float(p[tok(" " + w, add_special_tokens=False)["input_ids"][0]]) for w in words}, p


def test_embedded_model_knows_paris(smollm2):
    model, tok = smollm2
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert tuple(proj_weight(model, 0).shape) == (576, 1536)
    _, p = _probs(model, tok, "The capital of France is", [])
    assert tok.decode(int(p.argmax())) == " Paris"
    assert tok.padding_side == "right" and tok.pad_token_id is not None


def test_second_load_uses_converted_folder(smollm2):
    from bluebook.model.loading import embedded_model_dir, verify_model_dir
    assert verify_model_dir(embedded_model_dir())
    m2, _ = bluebook.load_model("smollm2-135m")
    a = dict(smollm2[0].named_parameters())
    for n, p in m2.named_parameters():
        assert torch.equal(p, a[n])


def test_memit_edit_france_rome(smollm2):
    model, tok = smollm2
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    req = bluebook.EditRequest("The capital of {} is", "France", "Rome", "Paris")
    res = bluebook.edit(model, tok, [req], "memit", progress=False)
    for n, p in model.named_parameters():           # edit() leaves the weights alone
        assert torch.equal(p, before[n])
    with res:
        p, _ = _probs(model, tok, "The capital of France is", ["Rome", "Paris"])
        assert p["Rome"] > p["Paris"]
        _, pg = _probs(model, tok, "The capital of Germany is", [])
        assert tok.decode(int(pg.argmax())) == " Berlin"
    for n, q in model.named_parameters():           # exact restore
        assert torch.equal(q, before[n])
