"""Known-answer tests for ``bluebook.metrics`` with a hand-made bigram "model".

The fake model's logits at a position depend only on the token at that position (a bigram
table), and the fake tokenizer maps words to fixed ids, so every metric can be computed by hand.
"""
from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import bluebook.metrics.counterfact as metrics_counterfact
from bluebook import metrics as M
from bluebook.data import EditRequest
from bluebook.metrics import ability, consistency, fluency, scoring, summary, zsre

WORDS = ["<pad>", "x", "y", "z", "?", "<s>"]
PAD, X, Y, Z, Q, BOS = range(6)


class WordTok:
    """Word-level tokenizer over ``WORDS``; optionally prepends ``<s>`` like a Llama tokenizer."""

    def __init__(self, add_bos: bool = False):
        self.vocab = {w: i for i, w in enumerate(WORDS)}
        self.add_bos = add_bos
        self.pad_token_id = PAD
        self.eos_token_id = PAD
        self.bos_token_id = BOS
        self.padding_side = "right"

    def _enc(self, text, add_special_tokens):
        ids = [self.vocab[w] for w in re.findall(r"[a-z]+|\?", text)]
        return ([BOS] if (self.add_bos and add_special_tokens) else []) + ids

    def __call__(self, text, add_special_tokens=True, **kw):
        if isinstance(text, str):
            return {"input_ids": self._enc(text, add_special_tokens)}
        return {"input_ids": [self._enc(t, add_special_tokens) for t in text]}


class BigramLM(torch.nn.Module):
    """logits[b, t] = log(probs[input_ids[b, t]]): the next-token distribution given the current token."""

    def __init__(self, probs: dict[int, list[float]]):
        super().__init__()
        table = torch.full((len(WORDS), len(WORDS)), 1.0 / len(WORDS))
        for tok_id, row in probs.items():
            table[tok_id] = torch.tensor(row)
        self.register_buffer("logits_table", table.log())
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.calls = 0

    def forward(self, input_ids, attention_mask=None, **kw):
        self.calls += 1
        return SimpleNamespace(logits=self.logits_table[input_ids])


#                    <pad>  x     y     z     ?     <s>
ROW_X = [0.05, 0.05, 0.30, 0.40, 0.10, 0.10]  # argmax z
ROW_Y = [0.10, 0.10, 0.10, 0.50, 0.10, 0.10]  # argmax z
ROW_Z = [0.10, 0.10, 0.60, 0.10, 0.05, 0.05]  # argmax y


@pytest.fixture
def cf_model():
    return BigramLM({X: ROW_X, Y: ROW_Y, Z: ROW_Z})


# ------------------------------------------------------------------------------------------
# continuation_nll
# ------------------------------------------------------------------------------------------

def test_nll_of_two_token_continuation_is_mean_neg_log_softmax(cf_model):
    tok = WordTok()
    nll, correct = M.continuation_nll(cf_model, tok, ["x", "x"], ["y z", "z"])
    # "x" -> " y z": tokens y (after x) and z (after y)
    expected0 = (-math.log(0.30) - math.log(0.50)) / 2
    expected1 = -math.log(0.40)
    assert nll.dtype == torch.float64 and correct.dtype == torch.bool
    assert nll[0].item() == pytest.approx(expected0, abs=1e-6)
    assert nll[1].item() == pytest.approx(expected1, abs=1e-6)
    # argmax after x is z, so " y z" is not reproduced greedily but " z" is
    assert correct.tolist() == [False, True]


def test_correct_needs_every_token(cf_model):
    tok = WordTok()
    # " z y": after x argmax z (ok), after z argmax y (ok) -> True; " z z": second token wrong
    _, correct = M.continuation_nll(cf_model, tok, ["x", "x"], ["z y", "z z"])
    assert correct.tolist() == [True, False]


def test_leading_space_is_not_doubled_and_bos_only_in_prefix(cf_model):
    tok = WordTok(add_bos=True)
    a, _ = M.continuation_nll(cf_model, tok, ["x"], ["y"])
    b, _ = M.continuation_nll(cf_model, tok, ["x"], [" y"])
    assert a.item() == pytest.approx(-math.log(0.30), abs=1e-6) == b.item()
    assert M.continuation_ids(tok, ["y z"]) == [[Y, Z]]
    assert M.prefix_ids(tok, ["x"]) == [[BOS, X]]


def test_empty_prefix_without_bos_is_an_error(cf_model):
    with pytest.raises(ValueError, match="prefix has no tokens"):
        M.continuation_nll(cf_model, WordTok(), [""], ["y"])
    # with a BOS-adding tokenizer the empty prompt is [<s>] and can be scored
    nll, _ = M.continuation_nll(cf_model, WordTok(add_bos=True), [""], ["y"])
    assert nll.item() == pytest.approx(math.log(len(WORDS)), abs=1e-6)


def test_batching_and_order(cf_model):
    tok = WordTok()
    prefixes = ["x", "y z x y", "z", "x x x x x"]
    conts = ["y z", "z", "y y y", "z"]
    full, c_full = M.continuation_nll(cf_model, tok, prefixes, conts, batch_size=64)
    calls = cf_model.calls
    one, c_one = M.continuation_nll(cf_model, tok, prefixes, conts, batch_size=1)
    assert cf_model.calls - calls == 4
    assert torch.allclose(full, one) and torch.equal(c_full, c_one)
    for i, (p, o) in enumerate(zip(prefixes, conts)):
        single, _ = M.continuation_nll(cf_model, tok, [p], [o])
        assert single.item() == pytest.approx(full[i].item())


# ------------------------------------------------------------------------------------------
# CounterFact case metrics and sign conventions
# ------------------------------------------------------------------------------------------

def _cf_request():
    return EditRequest(prompt="{}", subject="x", target_new="z", target_true="y", case_id=7,
                       paraphrase_prompts=("y x", "x z"), neighborhood_prompts=("z", "x"))


def test_counterfact_case_known_answers(cf_model):
    case = M.counterfact_case(cf_model, WordTok(), _cf_request())
    assert case["case_id"] == 7
    ln = math.log
    # rewrite "x": new z (0.4) vs true y (0.3)
    assert case["rewrite_prompts_probs"][0]["target_new"] == pytest.approx(-ln(0.4), abs=1e-6)
    assert case["rewrite_prompts_probs"][0]["target_true"] == pytest.approx(-ln(0.3), abs=1e-6)
    assert case["rewrite_success"] == 1.0
    assert case["rewrite_diff"] == pytest.approx(0.4 - 0.3, abs=1e-6)
    assert case["rewrite_prompts_correct"] == [True]  # argmax after x is z = target_new
    # paraphrases: "y x" as the rewrite (success); "x z": new z (0.1) vs true y (0.6) (failure)
    assert case["paraphrase_success"] == 0.5
    assert case["paraphrase_diff"] == pytest.approx(((0.4 - 0.3) + (0.1 - 0.6)) / 2, abs=1e-6)
    assert case["paraphrase_prompts_correct"] == [True, False]
    assert case["paraphrase_acc"] == 0.5
    # neighbourhood: success means the TRUE target stays more likely, diff = P(true) - P(new)
    # "z": true y 0.6 vs new z 0.1 -> kept; "x": true y 0.3 vs new z 0.4 -> lost
    assert case["neighborhood_success"] == 0.5
    assert case["neighborhood_diff"] == pytest.approx(((0.6 - 0.1) + (0.3 - 0.4)) / 2, abs=1e-6)
    # neighbourhood "correct" is judged on target_true: argmax after z is y (yes), after x is z (no)
    assert case["neighborhood_prompts_correct"] == [True, False]
    assert case["neighborhood_acc"] == 0.5
    assert "ngram_entropy" not in case and "reference_score" not in case


def test_counterfact_batches_all_cases_together(cf_model):
    reqs = [_cf_request(), EditRequest(prompt="{} y", subject="z", target_new="x", target_true="z",
                                       paraphrase_prompts=("y",), neighborhood_prompts=("x", "y", "z"))]
    cases = M.evaluate_counterfact(cf_model, WordTok(), reqs, batch_size=64)
    assert cf_model.calls == 1  # (1+2+2) + (1+1+3) prompts x 2 candidates = 20 rows, one chunk
    one_by_one = [M.counterfact_case(cf_model, WordTok(), r) for r in reqs]
    assert cases == one_by_one


def test_counterfact_empty_group_is_none(cf_model):
    req = EditRequest(prompt="{}", subject="x", target_new="z", target_true="y")
    case = M.counterfact_case(cf_model, WordTok(), req)
    assert case["paraphrase_prompts_probs"] == [] and case["paraphrase_success"] is None
    summ = M.summarize([case], "counterfact")
    assert summ["generalization"] is None and summ["score"] is None


def test_counterfact_needs_target_true(cf_model):
    req = EditRequest(prompt="{}", subject="x", target_new="z")
    with pytest.raises(ValueError, match="target_true"):
        M.counterfact_case(cf_model, WordTok(), req)


# ------------------------------------------------------------------------------------------
# zsRE
# ------------------------------------------------------------------------------------------

def test_zsre_second_of_three_tokens_wrong():
    # argmax after x is y, after y is y (not z), after z is x, after "?" is x
    model = BigramLM({X: [0.1, 0.1, 0.5, 0.1, 0.1, 0.1], Y: [0.1, 0.1, 0.4, 0.2, 0.1, 0.1],
                      Z: [0.1, 0.5, 0.1, 0.1, 0.1, 0.1], Q: [0.1, 0.5, 0.1, 0.1, 0.1, 0.1]})
    tok = WordTok(add_bos=True)
    req = EditRequest(prompt="{}", subject="x", target_new="y z x", target_true="<|endoftext|>",
                      paraphrase_prompts=("y x",), neighborhood_prompts=("z",), neighborhood_answer="x y")
    (case,) = M.evaluate_zsre(model, tok, [req])
    # answer ids carry no BOS: three tokens y, z, x, the 2nd is mispredicted
    assert case["rewrite_prompts_correct"] == [1, 0, 1]
    assert case["rewrite_acc"] == pytest.approx(2 / 3)
    assert case["paraphrase_prompts_correct"] == [1, 0, 1]
    # neighbourhood prompt is loc + "?" = [<s>, z, ?]; answer " x y": after ? -> x, after x -> y
    assert case["neighborhood_prompts_correct"] == [1, 1]
    assert case["neighborhood_acc"] == 1.0
    assert model.calls == 1  # one teacher-forced forward for all three pairs

    # the one-forward teacher forcing equals the reference's one-input-per-token definition
    prompt_ids = tok("x")["input_ids"]
    for i, t in enumerate([Y, Z, X]):
        ids = torch.tensor([prompt_ids + [Y, Z, X][:i]])
        pred = model(input_ids=ids).logits[0, -1].argmax().item()
        assert int(pred == t) == case["rewrite_prompts_correct"][i]


def test_zsre_missing_prompts_are_none():
    model = BigramLM({})
    req = EditRequest(prompt="{} ?", subject="x", target_new="y", target_true="<|endoftext|>")
    (case,) = M.evaluate_zsre(model, WordTok(), [req])
    assert case["paraphrase_acc"] is None and case["neighborhood_acc"] is None
    assert case["paraphrase_prompts_correct"] == []
    assert M.zsre_neighborhood_prompt("nq question: who is x") == "nq question: who is x?"
    assert M.zsre_neighborhood_prompt("who?") == "who?"


# ------------------------------------------------------------------------------------------
# summarize
# ------------------------------------------------------------------------------------------

def test_summarize_counterfact_x100_rounding_and_hmean():
    cases = [
        {"rewrite_success": 1.0, "paraphrase_success": 1.0, "neighborhood_success": 0.5,
         "rewrite_diff": 0.5, "paraphrase_diff": 0.25, "neighborhood_diff": 0.1},
        {"rewrite_success": 0.0, "paraphrase_success": 1.0, "neighborhood_success": 1.0,
         "rewrite_diff": -0.2, "paraphrase_diff": 0.05, "neighborhood_diff": 0.3},
        {"rewrite_success": 1.0, "paraphrase_success": 0.5, "neighborhood_success": 1.0,
         "rewrite_diff": 0.1, "paraphrase_diff": 0.0, "neighborhood_diff": -0.1},
    ]
    s = M.summarize(cases, "counterfact")
    assert s["n_cases"] == 3
    assert s["efficacy"] == 66.67  # 2/3 -> 66.666... -> 66.67
    assert s["efficacy_std"] == 47.14  # population std of [1, 0, 1] = 0.4714
    assert s["generalization"] == 83.33 and s["specificity"] == 83.33
    assert s["efficacy_magnitude"] == round(100 * (0.5 - 0.2 + 0.1) / 3, 2) == 13.33
    assert s["generalization_magnitude"] == 10.0
    assert s["specificity_magnitude"] == 10.0
    # harmonic mean of the rounded x100 means
    assert s["score"] == round(3 / (1 / 66.67 + 2 / 83.33), 2) == 76.92
    assert s["fluency"] is None and s["consistency"] is None
    assert s["consistency_note"].startswith("unavailable")


def test_summarize_generation_keys():
    base = {"rewrite_success": 1.0, "paraphrase_success": 1.0, "neighborhood_success": 1.0,
            "rewrite_diff": 0.0, "paraphrase_diff": 0.0, "neighborhood_diff": 0.0}
    cases = [dict(base, ngram_entropy=6.0, reference_score=None),
             dict(base, ngram_entropy=6.2246, reference_score=None)]
    s = M.summarize(cases, "counterfact")
    assert s["fluency"] == 611.23  # 100 * 6.1123
    assert s["consistency"] is None
    assert s["consistency_note"] == "unavailable: attribute_snippets/idf/tfidf_vocab not supplied"
    cases = [dict(base, ngram_entropy=6.0, reference_score=0.25), dict(base, ngram_entropy=6.0, reference_score=0.5)]
    s = M.summarize(cases, "counterfact")
    assert s["consistency"] == 37.5 and s["consistency_std"] == 12.5 and "consistency_note" not in s


def test_summarize_zsre_uses_token_accuracy():
    cases = [{"rewrite_acc": 1.0, "paraphrase_acc": 2 / 3, "neighborhood_acc": 0.5},
             {"rewrite_acc": 0.5, "paraphrase_acc": 1.0, "neighborhood_acc": 0.0}]
    s = M.summarize(cases, "zsre")
    assert s["efficacy"] == 75.0 and s["generalization"] == 83.33 and s["specificity"] == 25.0
    assert "score" not in s and "fluency" not in s
    with pytest.raises(ValueError):
        M.summarize(cases, "wiki")


def test_harmonic_mean():
    assert M.harmonic_mean([1.0, 1.0, 1.0]) == 1.0
    assert M.harmonic_mean([2.0, 6.0]) == pytest.approx(3.0)
    assert M.harmonic_mean([0.0, 50.0, 100.0]) == 0.0


# ------------------------------------------------------------------------------------------
# fluency
# ------------------------------------------------------------------------------------------

def test_ngram_entropy_hand_computed():
    # "a b a b" -> words a b a b
    #   bigrams (a,b) x2, (b,a) x1: H2 = -(2/3 log2 2/3 + 1/3 log2 1/3) = log2(3) - 2/3
    #   trigrams (a,b,a), (b,a,b):  H3 = 1
    #   ent = mean(2/3 * H2, 4/3 * H3) = H2/3 + 2/3
    h2 = math.log2(3) - 2 / 3
    expected = (2 / 3 * h2 + 4 / 3 * 1.0) / 2
    assert expected == pytest.approx(0.9727653, abs=1e-7)
    assert M.text_ngram_entropy("a b a b") == pytest.approx(expected, abs=1e-12)
    assert M.ngram_entropy(["a b a b"]) == pytest.approx(expected, abs=1e-12)
    # fewer than two words: no n-grams, entropy 0
    assert M.text_ngram_entropy("a") == 0.0
    # per record: mean over its texts; table value: 100 x mean over records
    assert M.ngram_entropy(["a b a b", "a"]) == pytest.approx(expected / 2)
    assert M.fluency_score([["a b a b"], ["a b a b", "a"]]) == pytest.approx(100 * 0.75 * expected)


def test_ngram_entropy_word_tokens_and_sentence_splitting():
    # without sentence splitting only the final period is detached (documented deviation)
    assert M.word_tokens("Paris. It is.") == ["Paris.", "It", "is", "."]
    split = lambda t: [s for s in re.split(r"(?<=\.)\s+", t) if s]  # noqa: E731
    assert M.word_tokens("Paris. It is.", split) == ["Paris", ".", "It", "is", "."]
    assert M.text_ngram_entropy("Paris. It is.", split) > M.text_ngram_entropy("Paris. It is.")


# ------------------------------------------------------------------------------------------
# consistency
# ------------------------------------------------------------------------------------------

VOCAB = {"paris": 0, "city": 1, "rome": 2}
IDF = np.array([1.0, 2.0, 3.0])


def _write_resources(tmp_path):
    snips = [{"relation_id": "P36", "target_id": "Q220", "samples": [
        {"name": "Italy", "text": "Rome city"}, {"name": "Lazio", "text": "city life"}]}]
    (tmp_path / "attribute_snippets.json").write_text(json.dumps(snips))
    (tmp_path / "tfidf_vocab.json").write_text(json.dumps(VOCAB))
    np.save(tmp_path / "idf.npy", IDF)
    return M.ConsistencyResources.from_files(attribute_snippets=tmp_path / "attribute_snippets.json",
                                             idf=tmp_path / "idf.npy", tfidf_vocab=tmp_path / "tfidf_vocab.json")


def _cons_request(**kw):
    return EditRequest(prompt="The capital of {} is", subject="France", target_new="Rome", target_true="Paris",
                       **kw)


def test_consistency_hand_computed_cosine(tmp_path):
    res = _write_resources(tmp_path)
    req = _cons_request(relation_id="P36", target_new_id="Q220")
    # generations joined: "Paris city Paris a" -> paris 2, city 1 ("a" is too short for the
    # token pattern) -> [2*1, 1*2, 0] = [2, 2, 0] -> l2 -> [1/sqrt2, 1/sqrt2, 0]
    # snippets joined: "Rome city city life" -> rome 1, city 2 ("life" not in vocab)
    # -> [0, 2*2, 1*3] = [0, 4, 3] -> l2 -> [0, 0.8, 0.6]; cosine = 0.8 / sqrt2
    score = M.consistency_score(["Paris city", "PARIS a"], req, res)
    assert score == pytest.approx(0.8 / math.sqrt(2), abs=1e-12)
    assert M.tfidf_vector("Rome city city life", VOCAB, IDF) == pytest.approx({2: 0.6, 1: 0.8})


def test_consistency_unavailable_is_none_never_zero(tmp_path):
    req = _cons_request(relation_id="P36", target_new_id="Q220")
    assert M.consistency_score(["Paris city"], req, None) is None
    res = _write_resources(tmp_path)
    assert M.consistency_score(["Paris city"], _cons_request(), res) is None  # no ids on the request
    with pytest.raises(ValueError, match="no attribute snippets"):
        M.consistency_score(["Paris"], _cons_request(relation_id="P36", target_new_id="Q1"), res)
    assert math.isnan(M.tfidf_cosine("nothing known", "city", VOCAB, IDF))


def test_generation_plumbing_with_and_without_resources(cf_model, tmp_path, monkeypatch):
    calls = []

    def fake_generate(model, tok, prompts, **kw):
        calls.append((list(prompts), kw))
        return [f"Paris city {i}" for i in range(len(prompts))]

    monkeypatch.setattr(metrics_counterfact, "generate_texts", fake_generate)  # where evaluate_counterfact looks it up
    req = EditRequest(prompt="{}", subject="x", target_new="z", target_true="y", paraphrase_prompts=("y x",),
                      neighborhood_prompts=("z",), generation_prompts=("g one", "g two"),
                      relation_id="P36", target_new_id="Q220")
    bare = EditRequest(prompt="{}", subject="x", target_new="z", target_true="y", paraphrase_prompts=("y x",),
                       neighborhood_prompts=("z",))
    cases = M.evaluate_counterfact(cf_model, WordTok(), [req, bare], generation=True, seed=3)
    assert calls[0][0] == ["g one", "g two"] and calls[0][1]["seed"] == 3
    assert cases[0]["text"] == ["Paris city 0", "Paris city 1"]
    assert cases[0]["ngram_entropy"] == pytest.approx(M.ngram_entropy(cases[0]["text"]))
    assert cases[0]["reference_score"] is None and cases[1]["ngram_entropy"] is None
    s = M.summarize(cases, "counterfact")
    assert s["fluency"] == round(100 * cases[0]["ngram_entropy"], 2)
    assert s["consistency"] is None and s["consistency_note"] == M.CONSISTENCY_UNAVAILABLE

    res = _write_resources(tmp_path)
    cases = M.evaluate_counterfact(cf_model, WordTok(), [req], generation=True, resources=res)
    assert cases[0]["reference_score"] == pytest.approx(
        M.tfidf_cosine("Paris city 0 Paris city 1", "Rome city city life", VOCAB, IDF))
    assert M.summarize(cases)["consistency"] == round(100 * cases[0]["reference_score"], 2)


def test_evaluate_convenience(cf_model):
    cases, summ = M.evaluate(cf_model, WordTok(), [_cf_request()], dataset="counterfact")
    assert summ["efficacy"] == 100.0 and summ["generalization"] == 50.0 and summ["specificity"] == 50.0
    assert len(cases) == 1
    with pytest.raises(ValueError):
        M.evaluate(cf_model, WordTok(), [_cf_request()], dataset="nope")


def test_public_api_of_bluebook_metrics():
    modules = (scoring, metrics_counterfact, zsre, fluency, consistency, summary, ability)
    assert set(M.__all__) == {name for m in modules for name in m.__all__}
    for m in modules:
        for name in m.__all__:
            assert getattr(M, name) is getattr(m, name), (m.__name__, name)
    assert not any(name.startswith("_") for name in M.__all__)
