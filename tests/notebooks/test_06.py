"""Notebook 06 (BLUE): steps per layer, base vs BLUE in a sequential run, which weights changed."""
import pytest

VARIANTS = [v for m in ("memit", "alphaedit", "rect", "prune") for v in (m, f"{m}_blue")]


@pytest.mark.notebook
@pytest.mark.model
def test_06_blue(nb_out, run_nb, live_of):
    m = run_nb("06_blue", nb_out)
    critical = m["critical_layers"]
    assert len(m["steps_per_layer"]) == len(critical)
    assert all(0 <= s <= m["steps_budget"] for s in m["steps_per_layer"])
    assert set(m["methods"]) == set(VARIANTS)
    for v in VARIANTS:
        for k in ("efficacy", "generalization", "specificity"):
            assert 0 <= m["methods"][v][k] <= 100
        if v.endswith("_blue"):
            assert m["changed_layers"][v] == [critical[0], critical[-1]]
        else:
            assert m["changed_layers"][v] == critical
    # claims re-derived from the stored tables
    c = live_of(m)   # the live run's own numbers, whatever tier decided the verdict
    steps = m["steps_per_layer"]
    assert c["steps_drop_after_first_layer"]["ours"] == pytest.approx(steps[1] - steps[0], abs=1e-6)
    assert c["third_layer_under_2_steps"]["ours"] == pytest.approx(steps[2], abs=1e-6)
    for base in ("memit", "alphaedit", "rect", "prune"):
        for k in ("efficacy", "generalization", "specificity"):
            got = c[f"counterfact:{base}_blue>{base}:{k}"]
            want = m["methods"][f"{base}_blue"][k] - m["methods"][base][k]
            assert got["ours"] == pytest.approx(want, abs=0.011) and got["n"] == m["n_edits"]   # tables: 2 dp
    assert c["blue_updates_two_layers"]["verdict"] == "agrees"
    # the same total budget per request: BLUE's caps S per optimisation, its base's 2S, never exceeded
    caps = m["target_budget"]
    S = caps["memit_blue"]
    for v, d in m["target_steps_used"].items():
        assert caps[v] == (S if v.endswith("_blue") else 2 * S), (v, caps[v])
        assert all(x <= caps[v] for x in d.values()) and sum(d.values()) <= 2 * S, (v, d)
    # PRUNE's restraint acts only above σ_max(W₀): below it, PRUNE's weights are MEMIT's up to one SVD's round-off
    ratios = m["prune_sigma_ratio"]
    assert set(ratios) == {str(l) for l in critical}
    if all(r < 1 for r in ratios.values()):
        assert m["prune_max_abs_diff_from_memit"] < 1e-4
