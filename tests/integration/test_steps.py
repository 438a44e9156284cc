"""Steps per layer (algorithms.md §10.4) and "which weights changed" on a tiny random Llama."""
import pytest
import torch

import bluebook
from bluebook import EditRequest
from bluebook.analysis.steps import LayerSteps, steps_per_layer
from bluebook.model.weights import restore_weights, snapshot_weights, update_norms, weights_changed

REQS = [
    EditRequest("The capital of {} is", "France", "Rome", "Paris", case_id=0),
    EditRequest("{} plays the sport of", "Michael Jordan", "soccer", "basketball", case_id=1),
    EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", "French", case_id=2),
]
HP = {"layers": [0, 1, 2], "target": {"steps": 4}, "stats": {"n_samples": 40, "max_len": 64}}


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """One tiny Llama and one temporary BLUEBOOK_CACHE for the module (layer statistics computed once)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BLUEBOOK_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield bluebook.tiny_model("tiny-llama")


def test_steps_per_layer_shapes_and_range(llama):
    model, tok = llama
    before = snapshot_weights(model)
    got = steps_per_layer(model, tok, REQS, hparams=HP, batch_size=2)
    assert isinstance(got, LayerSteps)
    assert got.layers == [0, 1, 2]
    assert got.max_steps == 4 and got.batch_size == 2
    for layer in got.layers:
        assert len(got.counts[layer]) == len(REQS)
        assert all(isinstance(c, int) and 0 <= c <= 4 for c in got.counts[layer])
    assert len(got.mean) == len(got.std) == 3
    assert all(0 <= m <= 4 and s >= 0 for m, s in zip(got.mean, got.std))
    assert list(got.table()["layer"]) == [0, 1, 2]
    assert weights_changed(before, model) == []          # nothing applied


def test_huge_early_stop_counts_zero(llama):
    model, tok = llama
    hp = {**HP, "target": {"steps": 4, "early_stop": 1.0e9}}
    got = steps_per_layer(model, tok, REQS, hparams=hp)
    assert got.batch_size == len(REQS)
    assert all(c == 0 for layer in got.layers for c in got.counts[layer])
    assert got.mean == [0.0, 0.0, 0.0] and got.std == [0.0, 0.0, 0.0]


def test_no_early_stop_counts_budget(llama):
    model, tok = llama
    hp = {**HP, "target": {"steps": 3, "early_stop": -1.0}}
    got = steps_per_layer(model, tok, REQS[:2], hparams=hp)
    assert all(c == 3 for layer in got.layers for c in got.counts[layer])


@pytest.mark.parametrize("method", ["memit_blue", "alphaedit_blue"])
def test_blue_changes_exactly_two_layers(llama, method):
    model, tok = llama
    before = snapshot_weights(model)
    res = bluebook.edit(model, tok, REQS, method, hparams=HP, apply=True, progress=False)
    assert weights_changed(before, model) == [0, 2]
    norms = update_norms(before, model)
    assert norms[0] > 0 and norms[2] > 0 and norms[1] == 0 and norms[3] == 0
    res.undo()
    assert weights_changed(before, model) == []


def test_base_changes_every_critical_layer_and_restore_is_exact(llama):
    model, tok = llama
    before = snapshot_weights(model)
    bluebook.edit(model, tok, REQS, "memit", hparams=HP, apply=True, progress=False)
    assert weights_changed(before, model) == [0, 1, 2]
    restore_weights(model, before)
    assert weights_changed(before, model) == []
    assert all(torch.equal(bluebook.model.specs.proj_weight(model, layer), w) for layer, w in before.items())
