"""Execute notebooks 04 and 05 with their CI defaults and check their metrics.json."""
import math

import pytest

pytestmark = pytest.mark.notebook


def _finite(d):
    vals = d.values() if isinstance(d, dict) else [d]
    return all(v is not None and math.isfinite(float(v)) for v in vals)


def test_04_residual_distribution(nb_out, run_nb):
    m = run_nb("04_residual_distribution", nb_out)
    for key in ("contribution_distributed", "contribution_direct", "cosine", "single_layer_efficacy_distributed",
                "single_layer_efficacy_direct", "single_layer_efficacy_ratio", "residual_deviation", "paper_claims"):
        assert key in m, key
    layers = [str(l) for l in m["layers"]]
    for key in ("contribution_distributed", "contribution_direct", "cosine", "residual_deviation"):
        assert sorted(m[key]) == sorted(layers) and _finite(m[key]), key
    last = layers[-1]
    assert m["contribution_distributed"][last] == m["contribution_direct"][last]
    assert all(-1 - 1e-6 <= c <= 1 + 1e-6 for c in m["cosine"].values())
    assert m["cosine"][last] == pytest.approx(1.0, abs=1e-5)
    for key in ("single_layer_efficacy_distributed", "single_layer_efficacy_direct"):
        assert all(0 <= v <= 100 for v in m[key].values())


def test_05_bounds(nb_out, run_nb):
    m = run_nb("05_bounds", nb_out)
    assert m["bound_holds_fraction"] == 1.0
    assert m["bound_holds_fraction_batch_sweep"] == 1.0 and m["bound_holds_fraction_seq_sweep"] == 1.0
    for key in ("spearman_deviation_distance", "spearman_deviation_batch_size", "spearman_deviation_seq_length",
                "n_pairs", "mean_deviation_by_distance"):
        assert key in m, key
    assert m["n_pairs"] == m["n_requests"] * len(m["layers"])
    assert _finite(m["spearman_deviation_distance"]) and _finite(m["mean_deviation_by_distance"])
    assert -1 <= m["spearman_deviation_distance"] <= 1
