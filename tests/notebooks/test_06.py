"""Notebook 06 (BLUE): steps per layer, base vs BLUE in a sequential run, which weights changed."""
import importlib.util
from pathlib import Path

import pytest

# ``run_nb`` lives in this folder's conftest.py; tests/notebooks is not a package, so load it by path.
_spec = importlib.util.spec_from_file_location("_nb_conftest_06", Path(__file__).with_name("conftest.py"))
_conf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conf)
run_nb = _conf.run_nb

VARIANTS = [v for m in ("memit", "alphaedit", "rect", "prune") for v in (m, f"{m}_blue")]


@pytest.mark.notebook
@pytest.mark.model
def test_06_blue(nb_out):
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
