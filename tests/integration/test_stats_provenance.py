"""Statistics only ever come from the unedited model: every path that can compute C, checked."""
import json

import pytest
import torch
from safetensors import safe_open

import bluebook
import bluebook.experiments.replicate as rep
from bluebook.core.config import StatsConfig
from bluebook.core.stats import CovarianceStore, StatsOnEditedModel, layer_stats
from bluebook.model.loading import model_fingerprint, tiny_model
from bluebook.model.specs import proj_weight

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital of France."] * 4
CFG = StatsConfig(n_samples=8, max_len=32, batch_tokens=64)
HP = {"target": {"steps": 3}, "stats": {"n_samples": 40, "max_len": 64}, "context_templates": [["{}"]]}


def _edit_weights(model, layer=1):
    with torch.no_grad():
        proj_weight(model, layer).add_(0.01)


def test_layer_stats_refuses_to_compute_on_an_edited_model(tmp_path):
    model, tok = tiny_model("tiny-gpt2")
    store = CovarianceStore(tmp_path)
    unedited = model_fingerprint(model)
    first = layer_stats(model, tok, [1], CFG, store=store, texts=TEXTS, corpus="toy", progress=False)
    _edit_weights(model, 0)
    assert model_fingerprint(model) != unedited
    # the cached entry of the unedited model is still usable ...
    again = layer_stats(model, tok, [1], CFG, store=store, fingerprint=unedited, texts=TEXTS, corpus="toy",
                        progress=False)
    assert torch.equal(first[1].C, again[1].C)
    # ... but a missing one is never computed on the edited weights under the unedited name
    with pytest.raises(StatsOnEditedModel, match="unedited model"):
        layer_stats(model, tok, [2], CFG, store=store, fingerprint=unedited, texts=TEXTS, corpus="toy",
                    progress=False)
    assert not list((tmp_path / unedited).glob("*layers.2*")) and not list((tmp_path / unedited).glob("*h.2.*"))
    # without a fingerprint the edited model is a model of its own, with its own entries
    own = layer_stats(model, tok, [1], CFG, store=store, texts=TEXTS, corpus="toy", progress=False)
    assert (tmp_path / model_fingerprint(model)).is_dir()
    assert own[1].C.shape == first[1].C.shape


def test_cache_entries_record_the_weights_they_came_from(tmp_path):
    model, tok = tiny_model("tiny-llama")
    store = CovarianceStore(tmp_path)
    layer_stats(model, tok, [0], CFG, store=store, texts=TEXTS, corpus="toy", progress=False)
    (f,) = list(tmp_path.rglob("*.safetensors"))
    with safe_open(str(f), framework="pt") as h:
        meta = h.metadata()
    assert meta["computed_on"] == meta["fingerprint"] == model_fingerprint(model)
    # an entry whose provenance is not recorded (or is another model's) is not trusted
    data = {"C": torch.eye(proj_weight(model, 0).shape[0 if model.config.model_type != "gpt2" else 1])}
    from safetensors.torch import save
    meta["computed_on"] = "someothermodel0"
    f.write_bytes(save(data, metadata=meta))
    with pytest.warns(RuntimeWarning, match="invalid"):
        layer_stats(model, tok, [0], CFG, store=store, texts=TEXTS, corpus="toy", progress=False)


def test_edit_on_an_edited_model_with_the_unedited_state_refuses(cache_dir):
    model, tok = tiny_model("tiny-llama")
    state = bluebook.SequentialState(fingerprint=model_fingerprint(model))
    _edit_weights(model, 0)
    req = bluebook.EditRequest("The capital of {} is", "France", "Rome", "Paris")
    before = {l: proj_weight(model, l).clone() for l in range(4)}
    with pytest.raises(StatsOnEditedModel):
        bluebook.edit(model, tok, [req], "memit", hparams=dict(HP, layers=[1, 2]), state=state, progress=False)
    assert all(torch.equal(proj_weight(model, l), w) for l, w in before.items())


def test_same_weights_from_two_folders_share_a_fingerprint(tmp_path):
    model, tok = tiny_model("tiny-gpt2")
    for d in ("a", "b"):
        model.save_pretrained(tmp_path / d)
        tok.save_pretrained(tmp_path / d)
    ma, _ = bluebook.load_model(str(tmp_path / "a"))
    mb, _ = bluebook.load_model(str(tmp_path / "b"))
    assert ma.config.to_dict()["_name_or_path"] != mb.config.to_dict()["_name_or_path"]
    assert model_fingerprint(ma) == model_fingerprint(mb) == model_fingerprint(model)


def test_resume_with_the_statistics_cache_deleted_matches_a_clean_run(tmp_path, cache_dir, monkeypatch):
    """The reported failure: killed after batch 1, statistics deleted, resumed — C must come from the
    unedited model again, and the results equal an uninterrupted run's."""
    reqs = bluebook.load_counterfact(n=4)

    def run(out):
        model, tok = tiny_model("tiny-llama")
        return rep.replicate((model, tok), "counterfact", methods=["memit"], n=4, batch=2, out=out,
                             hparams=dict(HP, layers=[1, 2, 3]), progress=False, requests=reqs)

    clean = run(tmp_path / "clean")
    calls = {"n": 0}

    def dies_in_batch_2(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")
        return bluebook.edit(*a, **k)
    monkeypatch.setattr(rep, "edit", dies_in_batch_2)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed")
    assert json.loads((tmp_path / "resumed" / "memit" / "progress.json").read_text())["batches_done"] == 1
    import shutil
    shutil.rmtree(cache_dir / "stats")                       # the statistics folder deleted between sittings
    monkeypatch.setattr(rep, "edit", bluebook.edit)
    resumed = run(tmp_path / "resumed")
    assert resumed["methods"]["memit"]["summary"] == clean["methods"]["memit"]["summary"]
    for f in (cache_dir / "stats").rglob("*.safetensors"):
        with safe_open(str(f), framework="pt") as h:
            meta = h.metadata()
        assert meta["computed_on"] == meta["fingerprint"], f.name
    from safetensors.torch import load_file
    wa = load_file(str(next((tmp_path / "clean" / "memit").glob("weights_b2.safetensors"))))
    wb = load_file(str(next((tmp_path / "resumed" / "memit").glob("weights_b2.safetensors"))))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
