"""The claim helpers: verdicts read off intervals, checked on hand-made cases where the answer is
known without the code (all-ones vs all-zeros, a threshold far inside or outside the data)."""
import pytest

from bluebook.metrics.claims import all_hold_claim, check_claims, claims_frame, decide, paired_claim, threshold_claim


def test_threshold_claim_rates_use_wilson_and_decide_both_ways():
    flags = [1] * 95 + [0] * 5                        # 0.95, Wilson [0.888, 0.978]
    above = threshold_claim("rate > 0.8", flags, 0.8)
    assert above["verdict"] == "agrees" and above["n"] == 100
    assert above["interval"][0] == pytest.approx(0.8882, abs=1e-3)   # Wilson, by hand: (p+z²/2n ± ...)/(1+z²/n)
    assert threshold_claim("rate > 0.99", flags, 0.99)["verdict"] == "disagrees"
    assert threshold_claim("rate > 0.95", flags, 0.95)["verdict"] == "inconclusive"
    assert threshold_claim("rate < 0.99", flags, 0.99, direction=-1)["verdict"] == "agrees"


def test_threshold_claim_labels_small_live_samples():
    c = threshold_claim("x", [1, 0, 1, 1], 0.1)
    assert c["n"] == 4 and "small live sample (n=4)" in c["note"]
    big = threshold_claim("x", [1, 0] * 30, 0.1, note="mine")
    assert big["note"] == "mine"
    rec = threshold_claim("x", [1, 0, 1], 0.1, evidence="recorded")
    assert "small" not in rec["note"]


def test_paired_claim_difference_and_direction():
    a = [1.0, 0.9, 0.8, 1.0, 0.95, 0.85] * 10
    b = [x - 0.3 for x in a]                          # exactly 0.3 higher on every record
    c = paired_claim("a > b", a, b)
    assert c["ours"] == pytest.approx(0.3) and c["verdict"] == "agrees"
    assert c["interval"] == pytest.approx([0.3, 0.3])  # no spread in the differences: the exact point
    assert paired_claim("a < b", a, b, direction=-1)["verdict"] == "disagrees"
    noisy = paired_claim("a > b", [1, 0, 1, 0], [0, 1, 0, 1])
    assert noisy["verdict"] == "inconclusive" and noisy["interval"][0] < 0 < noisy["interval"][1]


def test_all_hold_claim_one_counterexample_disagrees():
    assert all_hold_claim("bound", [True] * 20)["verdict"] == "agrees"
    c = all_hold_claim("bound", [True] * 19 + [False])
    assert c["verdict"] == "disagrees" and c["ours"] == pytest.approx(0.95)
    with pytest.raises(ValueError, match="no cases"):
        all_hold_claim("bound", [])


def test_decide_prefers_a_decisive_live_verdict_else_recorded():
    live_inc = paired_claim("a > b", [1, 0, 1, 0], [0, 1, 0, 1])
    rec = threshold_claim("a > b", [1] * 200, 0.5, evidence="recorded", note="run X")
    d = decide(live_inc, rec)
    assert d["verdict"] == "agrees" and d["evidence"] == "recorded"
    assert "live run inconclusive (n=4, inconclusive)" in d["note"] and "run X" in d["note"]
    assert d["live"] is live_inc and d["recorded"] is rec
    live_yes = threshold_claim("x", [1] * 100, 0.5)
    assert decide(live_yes, rec)["evidence"] == "live"
    # a decisive but small live sample beside a larger recorded run: the recorded verdict carries it
    small_yes = threshold_claim("x", [1] * 10, 0.5)
    rec_no = threshold_claim("x", [0] * 200, 0.5, evidence="recorded")
    d = decide(small_yes, rec_no)
    assert small_yes["verdict"] == "agrees" and d["verdict"] == "disagrees" and d["evidence"] == "recorded"
    assert "live run a small sample (n=10, agrees)" in d["note"]
    assert decide(small_yes, None)["verdict"] == "agrees"
    assert decide(live_inc)["verdict"] == "inconclusive"
    with pytest.raises(ValueError):
        decide(None, None)


def test_check_claims_names_the_bad_field():
    good = {"c": threshold_claim("x", [1] * 60, 0.5)}
    check_claims(good)
    assert list(claims_frame(good).columns)[:3] == ["paper", "ours", "low"]
    bad = {"c": dict(good["c"], verdict="maybe")}
    with pytest.raises(ValueError, match="claim 'c': verdict 'maybe'"):
        check_claims(bad)
    with pytest.raises(ValueError, match="has no 'n'"):
        check_claims({"c": {k: v for k, v in good["c"].items() if k != "n"}})
    with pytest.raises(ValueError, match="non-empty"):
        check_claims({})


def test_correlation_claim_monotone_and_noise():
    import numpy as np
    from scipy.stats import spearmanr

    from bluebook.metrics.claims import correlation_claim

    x = np.arange(60.0)
    up = correlation_claim("y rises with x", x, x ** 2)
    assert up["ours"] == pytest.approx(1.0) and up["verdict"] == "agrees"
    down = correlation_claim("y rises with x", x, -x)
    assert down["verdict"] == "disagrees" and down["ours"] == pytest.approx(-1.0)
    rng = np.random.default_rng(3)
    y = rng.normal(size=60)
    noise = correlation_claim("y rises with x", x, y)
    assert noise["ours"] == pytest.approx(spearmanr(x, y).statistic, abs=1e-6)
    assert noise["interval"][0] <= noise["ours"] <= noise["interval"][1]
    assert noise["verdict"] == "inconclusive"
    with pytest.raises(ValueError, match="constant"):
        correlation_claim("c", x, np.ones(60))


def test_threshold_claim_counts_are_not_rates():
    zeros = [0] * 8                                   # e.g. v* steps that are all 0
    as_rate = threshold_claim("fewer than 2", zeros, 2.0, direction=-1)
    as_mean = threshold_claim("fewer than 2", zeros, 2.0, direction=-1, rate=False)
    assert as_rate["interval"][1] > 0                 # Wilson's upper end for 0 of 8
    assert as_mean["interval"] == [0.0, 0.0] and as_mean["verdict"] == "agrees"


def test_decide_keeps_the_live_numbers_when_the_record_has_none_yet():
    from bluebook.metrics.claims import claim

    live = paired_claim("a > b", [1, 0, 1, 0], [0, 1, 0, 1])                     # inconclusive
    not_yet = claim("a > b", None, None, None, "inconclusive", "recorded", "run X: no evaluation point yet")
    d = decide(live, not_yet)
    assert d["evidence"] == "live" and d["ours"] == live["ours"] and d["interval"] == live["interval"]
    assert "recorded tier: run X: no evaluation point yet" in d["note"] and d["recorded"] is not_yet
