"""General-ability helpers: perplexity by hand, held-out texts, known facts, representation shift."""
import math

import numpy as np
import pytest
import torch

import bluebook
from bluebook.metrics import ability
from bluebook.model.loading import tiny_model

TEXTS = ["The capital of France is Paris.", "A cat sat on the mat and looked around for a while.", "Hi"]


@pytest.mark.parametrize("kind", ["tiny-gpt2", "tiny-llama"])
def test_perplexity_is_exp_mean_nll(kind):
    model, tok = tiny_model(kind)
    nlls = []
    with torch.no_grad():
        for t in TEXTS:
            ids = torch.tensor([tok(t)["input_ids"]])
            logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
            nlls.append(-logp.gather(-1, ids[0, 1:, None])[:, 0])
    expect = math.exp(float(torch.cat(nlls).mean()))
    got = ability.perplexity(model, tok, TEXTS, batch_size=2)
    assert got == pytest.approx(expect, rel=1e-4)
    # a single text agrees with the HF loss (mean NLL of the shifted labels)
    ids = torch.tensor([tok(TEXTS[1])["input_ids"]])
    with torch.no_grad():
        loss = model(ids, labels=ids).loss
    assert ability.perplexity(model, tok, TEXTS[1:2]) == pytest.approx(math.exp(float(loss)), rel=1e-4)


def test_perplexity_truncates_to_max_len():
    model, tok = tiny_model("tiny-gpt2")
    per = ability.token_nll(model, tok, [TEXTS[1] * 5], max_len=8)
    assert per[0].numel() == 7


def test_heldout_texts_exclude_the_stats_subset():
    stats = set(bluebook.wiki_texts(n=1000, seed=1))
    held = ability.heldout_texts(200, seed=0)
    assert len(held) == 200 and len(set(held)) == 200
    assert not stats & set(held)
    assert held == ability.heldout_texts(200, seed=0)           # deterministic
    assert held != ability.heldout_texts(200, seed=1)
    with pytest.raises(ValueError):
        ability.heldout_texts(10 ** 6)


def test_representation_shift():
    a = torch.randn(16, 5)
    s = ability.representation_shift(a, a.clone())
    assert np.all(s.l2 == 0) and np.all(s.relative == 0) and s.mean_l2 == 0
    assert np.allclose(s.cosine, 1)
    b = a.clone()
    b[:, 2] *= 2
    s = ability.representation_shift(a, b)
    assert s.l2[2] == pytest.approx(float(a[:, 2].norm()), rel=1e-6)
    assert s.relative[2] == pytest.approx(1.0) and s.l2[[0, 1, 3, 4]].max() == 0
    with pytest.raises(ValueError):
        ability.representation_shift(a, a[:, :3])


def test_known_fact_accuracy_matches_greedy_token():
    model, tok = tiny_model("tiny-llama")
    reqs = bluebook.load_counterfact(n=6)
    hits = ability.known_fact_hits(model, tok, reqs, batch_size=4)
    for r, h in zip(reqs, hits):
        ids = torch.tensor([tok(r.text)["input_ids"]])
        with torch.no_grad():
            top = int(model(ids).logits[0, -1].argmax())
        assert h == (top == tok(" " + r.target_true, add_special_tokens=False)["input_ids"][0])
    assert ability.known_fact_accuracy(model, tok, reqs) == pytest.approx(np.mean(hits))


def test_lm_eval_is_optional():
    assert isinstance(ability.lm_eval_available(), bool)
    if not ability.lm_eval_available():
        with pytest.raises(ImportError):
            ability.run_lm_eval(None, None, ["hellaswag"])
