"""bluebook.analysis on tiny random models: shapes, identities of the analysis quantities, the bound."""
import numpy as np
import pytest
import torch

import bluebook
from bluebook import EditRequest
from bluebook import analysis
from bluebook.core.config import EditConfig, StatsConfig, TargetConfig
from bluebook.model.specs import proj_weight

REQS = [
    EditRequest("The capital of {} is", "France", "Rome", "Paris", case_id=0,
                paraphrase_prompts=("Paris is nice. The capital of France is",)),
    EditRequest("{} plays the sport of", "Michael Jordan", "soccer", "basketball", case_id=1,
                paraphrase_prompts=("Some say that Michael Jordan plays the sport of",)),
    EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", "French", case_id=2,
                paraphrase_prompts=("Danielle Darrieux speaks",)),
]
TEMPLATES = (("{}",), ("The day was long. {}", "Because I said so and then left. {}"))
LAYERS = [0, 1, 2]


def _cfg():
    return EditConfig(layers=tuple(LAYERS), lam=1e-1, target=TargetConfig(steps=4, lr=0.5),
                      stats=StatsConfig(n_samples=40, max_len=64), context_templates=TEMPLATES)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import os
    old = os.environ.get("BLUEBOOK_CACHE")
    os.environ["BLUEBOOK_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    model, tok = bluebook.tiny_model("tiny-llama")
    cfg = _cfg()
    res = analysis.residuals_per_layer(model, tok, REQS, LAYERS, cfg, TEMPLATES)
    yield model, tok, cfg, res
    if old is None:
        os.environ.pop("BLUEBOOK_CACHE", None)
    else:
        os.environ["BLUEBOOK_CACHE"] = old


def test_residual_shapes_and_identities(setup):
    model, tok, cfg, res = setup
    n, d = len(REQS), model.get_input_embeddings().weight.shape[1]
    assert res.layers == LAYERS and res.last_layer == 2
    assert res.delta_last.shape == (n, d)
    for i, l in enumerate(LAYERS):
        assert res.delta_direct[l].shape == (n, d)
        torch.testing.assert_close(res.distributed[l], res.delta_last / (len(LAYERS) - i))
        assert res.cosine[l].shape == (n,) and np.all(np.abs(res.cosine[l]) <= 1 + 1e-6)
        assert res.steps[l].shape == (n,)
        assert res.distance(l) == 2 - i
    assert torch.equal(res.delta_direct[2], res.delta_last)
    np.testing.assert_allclose(res.cosine[2], 1.0, atol=1e-5)
    np.testing.assert_allclose(res.deviation[2], 0.0, atol=0)
    assert len(res.rows()) == n * len(LAYERS)


def test_target_prob_zero_vectors_is_unedited_prob(setup):
    model, tok, cfg, res = setup
    p_none = analysis.target_prob(model, tok, REQS, 1, None, TEMPLATES)
    p_zero = analysis.target_prob(model, tok, REQS, 1, torch.zeros_like(res.delta_last), TEMPLATES)
    np.testing.assert_allclose(p_zero, p_none, rtol=1e-6)
    # ... and equals the probability optimize_targets logs before its first step (δ = 0)
    first = np.array([t[0] for t in res.targets[1].prob])
    np.testing.assert_allclose(p_none, first, rtol=1e-4, atol=1e-7)
    # ... and with δ^l added it reproduces the logged probability of the final δ (last trace entry)
    p_final = analysis.target_prob(model, tok, REQS, 1, res.delta_direct[1], TEMPLATES)
    np.testing.assert_allclose(p_final, res.prob[1], rtol=1e-3, atol=1e-6)


def test_contribution_at_last_layer_is_identical(setup):
    model, tok, cfg, res = setup
    sc = analysis.contribution_scores(model, tok, REQS, res, TEMPLATES)
    assert sc.p0.shape == (len(REQS),)
    np.testing.assert_array_equal(sc.s_distributed[2], sc.s_direct[2])
    assert set(sc.mean("direct")) == set(LAYERS)
    assert len(sc.rows()) == 2 * len(REQS) * len(LAYERS)


def test_single_layer_uses_distributed_share_and_restores(setup):
    model, tok, cfg, res = setup
    from bluebook.core.distribute import SingleLayer
    before = {l: proj_weight(model, l).detach().clone() for l in LAYERS}
    for i, l in enumerate(LAYERS):
        pre = {2: res.targets[2]}
        r = bluebook.edit(model, tok, REQS, "memit", hparams=cfg, distribution=SingleLayer(l, direct=False),
                          precomputed_targets=pre, progress=False)
        assert r.layers == [l]
        torch.testing.assert_close(r.residuals[l].T.cpu(), res.delta_last / (len(LAYERS) - i),
                                   rtol=1e-4, atol=1e-5)
        r = bluebook.edit(model, tok, REQS, "memit", hparams=cfg, distribution=SingleLayer(l, direct=True),
                          precomputed_targets={l: res.targets[l]}, progress=False)
        torch.testing.assert_close(r.residuals[l].T.cpu(), res.delta_direct[l], rtol=1e-4, atol=1e-5)
    out = analysis.single_layer_editing(model, tok, REQS, LAYERS, cfg, 0, residuals=res)
    for kind in ("distributed", "direct", "unedited"):
        assert 0 <= out[kind]["efficacy"] <= 100
    for l in LAYERS:
        assert torch.equal(proj_weight(model, l), before[l])


def test_bound_checks_hold(setup):
    model, tok, cfg, res = setup
    tab = analysis.bound_checks(model, tok, REQS, LAYERS, cfg, residuals=res, templates=TEMPLATES)
    assert len(tab) == len(REQS) * len(LAYERS)
    assert all(r["holds"] for r in tab.rows)
    assert tab.holds_fraction == 1.0
    # the fast Q equals solvers.memit_Q, and the rows equal theory.check_bound
    from bluebook.analysis import theory
    from bluebook.core.solvers import memit_Q
    K = bluebook.read_states(model, tok, REQS, key_layers=[0], templates=TEMPLATES).keys[0].double()
    C = bluebook.layer_stats(model, tok, [0], cfg.stats, progress=False)[0].C.double()
    Cp = K[:, :1] @ K[:, :1].T
    torch.testing.assert_close(analysis._QSolver(C, cfg.lam, Cp).Q(K[:, 1:]), memit_Q(K[:, 1:], C, cfg.lam, Cp))
    ref = theory.check_bound(K[:, :1], C, cfg.lam, res.delta_direct[0].double().T[:, :1],
                             res.delta_last.double().T[:, :1], 2)
    row = next(r for r in tab.rows if r["layer"] == 0 and r["batch"] == 0)
    for k, v in ref.to_dict().items():
        assert row[k] == pytest.approx(v, rel=1e-6), k
    last = [r for r in tab.rows if r["layer"] == 2]
    assert all(r["deviation"] == 0.0 for r in last)
    sweep = analysis.batch_size_sweep(model, tok, REQS, [1, 2, 3, 8], LAYERS, cfg, residuals=res,
                                      templates=TEMPLATES)
    assert sorted({r["batch_size"] for r in sweep.rows}) == [1, 2, 3]
    assert all(r["holds"] for r in sweep.rows)
    earlier = [EditRequest("{} was born in", s, "Paris", "Rome", case_id=10 + k)
               for k, s in enumerate(["Alan Turing", "Marie Curie", "Ada Lovelace", "Niels Bohr"])]
    seq = analysis.sequential_sweep(model, tok, REQS[:2], earlier, [0, 1, 2], LAYERS, cfg, residuals=None,
                                    templates=TEMPLATES, earlier_batch_size=2)
    assert sorted({r["seq_length"] for r in seq.rows}) == [0, 1, 2]
    assert all(r["holds"] for r in seq.rows)
    cp = {r["seq_length"]: r["lemma43_cp_norm"] for r in seq.rows if r["layer"] == 0}
    assert cp[0] == 0.0 and cp[1] < cp[2]
    assert np.isnan(analysis.spearman([1, 1, 1], [1, 2, 3]))
    assert analysis.spearman([1, 2, 3, 4], [1, 3, 5, 9]) == pytest.approx(1.0)
