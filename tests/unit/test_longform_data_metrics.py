"""The long-form set (built from held-out Wikipedia leads) and the long-form text metrics."""
import pytest

from bluebook.data.longform import LONGFORM_PROMPT, build_longform_records, load_longform
from bluebook.metrics.longform import locality_scores, text_scores, token_f1


def test_token_f1_hand_computed():
    # prediction {the, cat, sat}, reference {the×2, cat, mat}: 2 words in common, P 2/3, R 2/4
    assert token_f1("The cat sat", "the cat the mat") == pytest.approx(4 / 7)
    assert token_f1("", "a b") == 0.0 and token_f1("x y", "a b") == 0.0


def test_text_scores_against_hand_computed_rouge_and_bleu_bounds():
    same = text_scores("the harbour city of glass", "the harbour city of glass")
    assert all(same[k] == pytest.approx(1.0) for k in ("rouge1", "rouge2", "rougeL", "bleu", "token_f1"))
    none = text_scores("alpha beta gamma", "delta epsilon zeta")
    assert all(none[k] == pytest.approx(0.0) for k in ("rouge1", "rouge2", "rougeL", "bleu", "token_f1"))
    # reference "a b c d", prediction "a c d": LCS 3, precision 1, recall 3/4, F = 6/7; bigrams: "c d" of 2 and 3
    s = text_scores("a c d", "a b c d")
    assert s["rougeL"] == pytest.approx(6 / 7)
    assert s["rouge1"] == pytest.approx(6 / 7)
    assert s["rouge2"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert 0.0 < s["bleu"] < 1.0


def test_locality_scores():
    loc = locality_scores(["the moon is bright", "rain falls"], ["the moon is bright", "snow falls"])
    assert loc[0] == {"rougeL": pytest.approx(1.0), "unchanged": 1.0}
    assert loc[1]["unchanged"] == 0.0 and loc[1]["rougeL"] == pytest.approx(0.5)


def _entries():
    out = []
    for topic in ("Arts", "Geography", "Science"):
        for i in range(6):
            t = f"{topic} Item {i}"
            out.append({"title": t, "topic": topic,
                        "extract": f"{t} is a thing number {i} of {topic.lower()}. " + " ".join(
                            f"It has property {j} and more words here." for j in range(6))})
    out.append({"title": "No Prefix", "topic": "Arts", "extract": "Something else entirely. " * 10})
    return out


def test_build_records_swaps_same_topic_descriptions_and_respects_exclusions():
    recs = build_longform_records(_entries(), exclude_titles={"Arts Item 0"}, n=4, seed=3, min_words=20,
                                  max_words=60, n_unrelated=2)
    assert len(recs) == 4
    titles = set()
    for r in recs:
        assert r["prompt"] == LONGFORM_PROMPT and "{}" in r["paraphrase_prompt"]
        assert r["donor"] != r["subject"] and r["donor"].split(" Item")[0] == r["subject"].split(" Item")[0]
        assert r["target_new"].startswith(r["subject"] + " is a thing") and r["donor"] not in r["target_new"]
        assert 20 <= len(r["target_new"].split()) <= 60 + 3 * 2
        assert all(u.startswith("Tell me about ") and r["topic"] not in u for u in r["unrelated_prompts"])
        titles |= {r["subject"], r["donor"]}
    assert "Arts Item 0" not in titles and "No Prefix" not in titles
    assert len(titles) == 8                                   # every article used once
    with pytest.raises(ValueError, match="pairs"):
        build_longform_records(_entries(), n=50, min_words=20, max_words=60)
    with pytest.raises(ValueError, match="unrelated"):
        build_longform_records(_entries(), n=7, min_words=20, max_words=60, n_unrelated=3)


def test_shipped_set_is_disjoint_from_the_statistics_sample_and_well_formed():
    import json

    from bluebook.data.wiki import wiki_offline_path, wiki_texts
    recs = load_longform(as_requests=False)
    assert len(recs) >= 200
    stats = set(wiki_texts(n=1000, seed=1))
    raw = json.loads(wiki_offline_path().read_text(encoding="utf-8"))
    extract = {e["title"]: e["extract"] for e in raw.values()}
    for r in recs:
        # neither the subject's nor the donor's article is one the statistics read
        assert extract[r["subject"]] not in stats and extract[r["donor"]] not in stats
        assert extract[r["subject"]].startswith(r["true_description"][:40])
    reqs = load_longform(n=5)
    assert [q.case_id for q in reqs] == [0, 1, 2, 3, 4]
    assert all(q.target_true is None and len(q.target_new.split()) >= 30 and len(q.paraphrase_prompts) == 1
               and len(q.neighborhood_prompts) == 2 for q in reqs)
    with pytest.raises(ValueError, match="n=10000"):
        load_longform(n=10000)
