"""Layer statistics: one pass for several layers, early stop = full forward, cache keyed and checked."""

import pytest
import torch

import bluebook
from bluebook.core.config import StatsConfig
from bluebook.core.stats import CovarianceStore, collect_second_moments, layer_stats

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital of France.",
         "A tiny model has tiny statistics, computed here on a few sentences."] * 4
CFG = StatsConfig(n_samples=12, max_len=32, batch_tokens=64)


def test_early_stop_equals_full_forward_and_manual(tiny):
    model, tok = tiny
    a = collect_second_moments(model, tok, [0, 2], TEXTS, CFG, progress=False)
    b = collect_second_moments(model, tok, [0, 2], TEXTS, CFG, progress=False, early_stop=False)
    for l in (0, 2):
        torch.testing.assert_close(a[l].moment(), b[l].moment())
    # manual: every non-pad token's projection input, stacked
    from bluebook.model.hooks import Trace
    from bluebook.model.specs import spec_for
    name = spec_for(model).proj_name(2)
    rows = []
    for t in TEXTS:
        enc = tok(t, return_tensors="pt", truncation=True, max_length=32)
        with Trace(model, [name], inputs=True, outputs=False) as tr:
            model(**enc)
        rows.append(tr.inputs[name][0])
    X = torch.cat(rows).double()
    torch.testing.assert_close(a[2].moment().double(), X.T @ X / X.shape[0], atol=1e-5, rtol=1e-4)
    assert a[2].count == X.shape[0]


def test_cache_roundtrip_and_corruption(tmp_path):
    model, tok = bluebook.tiny_model("tiny-gpt2")
    store = CovarianceStore(tmp_path)
    first = layer_stats(model, tok, [1, 3], CFG, store=store, texts=TEXTS, corpus="toy", progress=False)
    files = sorted(tmp_path.rglob("*.safetensors"))
    assert len(files) == 2 and all("toy" in f.name for f in files)
    again = layer_stats(model, tok, [1, 3], CFG, store=store, texts=TEXTS, corpus="toy", progress=False)
    assert torch.equal(first[1].C, again[1].C)
    # truncate one file: detected, warned about, recomputed — never silently used
    files[0].write_bytes(files[0].read_bytes()[:100])
    with pytest.warns(RuntimeWarning, match="invalid"):
        fixed = layer_stats(model, tok, [1, 3], CFG, store=store, texts=TEXTS, corpus="toy", progress=False)
    assert torch.equal(fixed[1].C, first[1].C)
    # another layer / corpus / dtype is another key
    other = layer_stats(model, tok, [1], StatsConfig(n_samples=12, max_len=32, dtype="float64"), store=store,
                        texts=TEXTS, corpus="toy", progress=False)
    assert other[1].C.dtype == torch.float64
    assert len(sorted(tmp_path.rglob("*.safetensors"))) == 3


def test_nan_statistics_refused(tmp_path, monkeypatch):
    model, tok = bluebook.tiny_model("tiny-gpt2")
    import bluebook.core.stats as S
    orig = S.SecondMoment.moment
    monkeypatch.setattr(S.SecondMoment, "moment", lambda self: orig(self) * float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        layer_stats(model, tok, [1], CFG, store=CovarianceStore(tmp_path), texts=TEXTS, corpus="toy", progress=False)


def test_edit_is_reproducible_bitwise(cache_dir):
    from bluebook.core.config import EditConfig, TargetConfig
    model, tok = bluebook.tiny_model("tiny-llama")
    cfg = EditConfig(layers=(0, 1), lam=1e-2, target=TargetConfig(steps=4),
                     stats=StatsConfig(n_samples=30, max_len=64), template_seed=3)
    reqs = [bluebook.EditRequest("The capital of {} is", "France", "Rome", "Paris")]
    a = bluebook.edit(model, tok, reqs, "memit_blue", hparams=cfg, progress=False)
    b = bluebook.edit(model, tok, reqs, "memit_blue", hparams=cfg, progress=False)
    for l in a.deltas:
        assert torch.equal(a.deltas[l], b.deltas[l])


def test_export_edited_model_roundtrip(cache_dir, tmp_path):
    from bluebook.core.config import EditConfig, TargetConfig
    from bluebook.experiments.export import load_edited, save_edited
    model, tok = bluebook.tiny_model("tiny-gpt2")
    cfg = EditConfig(layers=(1, 2), lam=1e-2, target=TargetConfig(steps=3),
                     stats=StatsConfig(n_samples=30, max_len=64))
    req = bluebook.EditRequest("The capital of {} is", "France", "Rome", "Paris")
    res = bluebook.edit(model, tok, [req], "memit", hparams=cfg, progress=False)
    with pytest.raises(ValueError, match="applied"):
        save_edited(model, tok, tmp_path / "m", [res])
    res.apply()
    out = save_edited(model, tok, tmp_path / "m", [res])
    m2, t2, log = load_edited(out)
    enc = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, m2(**enc).logits)
    assert log["edits"][0]["method"] == "memit" and log["edits"][0]["requests"][0]["subject"] == "France"
