"""Notebook 06 (BLUE): steps per layer, base vs BLUE in a sequential run, which weights changed."""
import pytest

VARIANTS = [v for m in ("memit", "alphaedit", "rect", "prune") for v in (m, f"{m}_blue")]


@pytest.mark.notebook
@pytest.mark.model
def test_06_blue(nb_out, run_nb):
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
