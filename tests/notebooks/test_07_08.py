"""Notebooks 07 (replication tables) and 08 (general ability) on their CI defaults."""
import math

import pytest

METHODS = ["memit", "memit_blue", "alphaedit", "alphaedit_blue", "rect", "rect_blue", "prune", "prune_blue"]
KEYS = ("efficacy", "generalization", "specificity")


@pytest.mark.notebook
def test_07_replication(nb_out, run_nb):
    m = run_nb("07_replication", nb_out)
    assert m["datasets"] == ["counterfact", "zsre"]
    for ds in ("counterfact", "zsre"):
        for meth in ["unedited"] + METHODS:
            for k in KEYS:
                v = m[ds][meth][k]
                assert v is not None and math.isfinite(v) and 0 <= v <= 100, (ds, meth, k, v)
        for meth in METHODS:
            assert m[ds][meth]["efficacy"] >= m[ds]["unedited"]["efficacy"]
        for base in ("memit", "alphaedit", "rect", "prune"):
            pair = m[ds]["blue_vs_base"][base]
            assert set(pair) == set(KEYS)
            assert pair["efficacy"]["blue"] == m[ds][base + "_blue"]["efficacy"]
    assert (nb_out / "07_replication" / "results.md").exists()
    assert (nb_out / "07_replication" / "figures" / "bars_counterfact.png").exists()


@pytest.mark.notebook
def test_08_general_ability(nb_out, run_nb):
    m = run_nb("08_general_ability", nb_out)
    p0 = m["unedited"]["perplexity"]
    assert math.isfinite(p0) and p0 > 1
    assert set(m["methods"]) == set(METHODS)
    for meth, r in m["methods"].items():
        assert 0.5 <= r["perplexity_ratio"] <= 2.0, meth
        assert 0 <= r["known_fact_accuracy"] <= 1
        assert math.isfinite(r["shift_mean_relative"]) and r["shift_mean_relative"] >= 0
        assert 0 <= r["edit_efficacy"] <= 100
    assert m["n_pairs"] == 4 and all(0 <= v <= 4 for v in m["blue_better"].values())
    assert (nb_out / "08_general_ability" / "figures" / "representation_shift.png").exists()
