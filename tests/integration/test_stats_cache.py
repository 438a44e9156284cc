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


@pytest.mark.parametrize("kind", ["tiny-gpt2", "tiny-gptj"])
def test_documents_longer_than_the_context_are_cut_to_it(kind, tmp_path):
    """The default 512-token truncation on a model with learned / tabled positions of 256 (the tiny
    GPT-2 and GPT-J) used to index past the position table; the statistics are now those of the
    documents cut at the model's context, and the cache names the length really used."""
    model, tok = bluebook.tiny_model(kind)
    limit = model.config.n_positions
    long_texts = [" ".join(TEXTS) * 8] * 3
    assert all(len(tok(t)["input_ids"]) > 2 * limit for t in long_texts)
    store = CovarianceStore(tmp_path)
    big = StatsConfig(n_samples=3, max_len=4 * limit, batch_tokens=4 * limit)
    got = layer_stats(model, tok, [1], big, store=store, texts=long_texts, corpus="long", progress=False)
    want = collect_second_moments(model, tok, [1], long_texts,
                                  StatsConfig(n_samples=3, max_len=limit, batch_tokens=4 * limit), progress=False)
    torch.testing.assert_close(got[1].C, want[1].moment().to(got[1].C.dtype))
    assert got[1].count == 3 * limit
    assert [f.name for f in tmp_path.rglob("*.safetensors")] == [got[1].key] and f"len{limit}" in got[1].key


def test_ability_and_embedding_scorers_cut_long_texts_to_the_context():
    from bluebook.metrics import ability
    from bluebook.metrics.longform import embed_texts
    model, tok = bluebook.tiny_model("tiny-gpt2")
    limit = model.config.n_positions
    text = " ".join(TEXTS) * 8
    assert ability.token_nll(model, tok, [text], max_len=4 * limit)[0].numel() == limit - 1
    torch.testing.assert_close(embed_texts(model, tok, [text], max_len=4 * limit),
                               embed_texts(model, tok, [text], max_len=limit))


def test_fit_to_context_cuts_only_where_the_config_names_a_shorter_context():
    from types import SimpleNamespace

    from bluebook.model.tokens import fit_to_context
    model, _ = bluebook.tiny_model("tiny-gpt2")
    limit = model.config.n_positions
    assert fit_to_context(model, 4 * limit) == limit and fit_to_context(model, limit - 1) == limit - 1
    no_context = SimpleNamespace(config=SimpleNamespace(hidden_size=8))
    assert fit_to_context(no_context, 12345) == 12345
