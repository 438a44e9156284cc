"""Intervals (hand-computed cases and properties), classification scores, probe files and validation."""
import math

import numpy as np
import pytest

from bluebook.data.probes import Probe, available_probes, load_fact_pool, load_probe
from bluebook.metrics.intervals import bootstrap_mean, interval, paired_difference, wilson
from bluebook.metrics.probes import classification_scores


def _wilson_by_hand(k, n, z=1.959963984540054):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(5, 10), (0, 20), (20, 20), (97, 100), (1, 3)])
def test_wilson_matches_the_formula(k, n):
    est = wilson(k, n)
    lo, hi = _wilson_by_hand(k, n)
    assert est.low == pytest.approx(lo, abs=1e-12) and est.high == pytest.approx(hi, abs=1e-12)
    assert est.low <= est.value <= est.high and est.n == n


def test_wilson_rejects_bad_counts():
    with pytest.raises(ValueError, match="successes"):
        wilson(11, 10)
    with pytest.raises(ValueError, match="n must be"):
        wilson(0, 0)


def test_interval_picks_wilson_for_flags_and_bootstrap_otherwise():
    assert interval([1, 0, 1, 1, None]).method == "wilson"
    est = interval([1.0, 0.5, 0.0, 1.0, 0.5], scale=100)
    assert est.method == "bootstrap" and est.value == pytest.approx(60.0)
    assert 0 <= est.low < 60 < est.high <= 100
    with pytest.raises(ValueError, match="NaN"):
        interval([0.5, float("nan")])


def test_bootstrap_interval_covers_a_known_mean_about_95_percent():
    rng = np.random.default_rng(1)
    hits = 0
    for s in range(200):
        x = rng.uniform(0, 1, size=60)                        # true mean 0.5
        est = bootstrap_mean(x, n_resamples=500, seed=s)
        hits += est.low <= 0.5 <= est.high
    assert 0.88 <= hits / 200 <= 0.99


def test_paired_difference_uses_the_pairing():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, size=200)
    better = np.clip(base + 0.05, 0, 1)                       # a small, consistent gain
    est = paired_difference(better, base)
    assert est.low > 0                                         # clear when paired
    unpaired = bootstrap_mean(better).low - bootstrap_mean(base).high
    assert unpaired < 0                                        # the two marginal intervals overlap
    assert paired_difference([0.5, 1.0], [0.5, 1.0]).method == "exact"
    with pytest.raises(ValueError, match="records"):
        paired_difference([1, 0], [1])


def test_classification_scores_hand_case():
    # y = [0, 0, 1, 1], predictions [0, 1, 1, 1]
    s = classification_scores([0, 0, 1, 1], [0, 1, 1, 1], ["neg", "pos"], n_resamples=200)
    assert s["accuracy"]["value"] == 0.75
    assert s["f1"]["value"] == pytest.approx((2 / 3 + 0.8) / 2, abs=1e-4)
    assert s["mcc"]["value"] == pytest.approx(2 / math.sqrt(12), abs=1e-4)
    assert s["majority_rate"] == 0.5 and s["above_chance"] is False    # n=4 cannot show it
    assert s["predicted_counts"] == {"neg": 1, "pos": 3}


def test_probe_validation_names_the_problem():
    ok = dict(name="p", task="t", template="{text} ->", label_words={"a": "yes", "b": "no"})
    Probe(items=({"text": "x", "label": "a"},), **ok)
    with pytest.raises(ValueError, match="label 'c'"):
        Probe(items=({"text": "x", "label": "c"},), **ok)
    with pytest.raises(ValueError, match="no text for"):
        Probe(items=({"text": " ", "label": "a"},), **ok)
    with pytest.raises(ValueError, match="template"):
        Probe(items=(), **{**ok, "template": "{sentence}"})
    with pytest.raises(ValueError, match="unknown probe 'nope'"):
        load_probe("nope")


@pytest.mark.parametrize("name", available_probes())
def test_shipped_probes_are_balanced_attributed_and_distinct(name):
    p = load_probe(name)
    assert p.source and p.licence and len(p.items) >= 200
    for n in (20, 100, 200):                                   # any prefix is label-balanced
        counts = [sum(str(it["label"]) == lab for it in p.items[:n]) for lab in p.labels]
        assert max(counts) - min(counts) <= 1, (n, counts)
    prompts = [p.prompt(it) for it in p.items]
    assert len(set(prompts)) == len(prompts)                   # no duplicate questions


def test_the_five_probes_ship():
    assert set(available_probes()) == {"sentiment", "nli", "entailment", "mmlu_tf", "acceptability"}


def test_fact_pool_is_disjoint_from_the_shipped_edit_subset():
    import bluebook
    pool = load_fact_pool()
    shipped = {r.case_id for r in bluebook.load_counterfact()}
    assert len(pool) == 5000 and not shipped & {r.case_id for r in pool}
    assert all(r.target_true and r.subject in r.text for r in pool[:200])
