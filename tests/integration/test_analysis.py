"""bluebook.analysis on tiny random models, each quantity checked against a separate computation of it:
v* runs of their own, a one-prompt-at-a-time probability, the updates the editor writes, keys and
statistics read directly."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bluebook
from bluebook import EditRequest, analysis
from bluebook.analysis import theory
from bluebook.core.config import EditConfig, StatsConfig, TargetConfig
from bluebook.core.distribute import SingleLayer
from bluebook.core.templates import flatten
from bluebook.model.hooks import edit_output
from bluebook.model.specs import proj_weight, spec_for
from bluebook.model.tokens import subject_last_index

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
    """One tiny Llama, its residuals, and one temporary BLUEBOOK_CACHE for the module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BLUEBOOK_CACHE", str(tmp_path_factory.mktemp("cache")))
        model, tok = bluebook.tiny_model("tiny-llama")
        cfg = _cfg()
        yield model, tok, cfg, analysis.residuals_per_layer(model, tok, REQS, LAYERS, cfg, TEMPLATES)


def test_residuals_match_separate_target_runs(setup):
    model, tok, cfg, res = setup
    n, d = len(REQS), model.get_input_embeddings().weight.shape[1]
    assert res.layers == LAYERS and res.last_layer == 2
    assert [res.distance(layer) for layer in LAYERS] == [2, 1, 0]
    # δ^l from a v* run of its own at each layer, and the per-layer numbers recomputed in numpy
    direct = {layer: bluebook.optimize_targets(model, tok, REQS, layer, cfg.target, TEMPLATES, progress=False)
              .delta.detach().double().cpu().numpy() for layer in LAYERS}
    last = direct[2]
    for layer, divisor in zip(LAYERS, (3, 2, 1)):           # MEMIT's share at l_i is δ^L / (N_L − i)
        dl, share = direct[layer], last / divisor
        assert res.delta_direct[layer].shape == res.distributed[layer].shape == (n, d)
        np.testing.assert_allclose(res.delta_direct[layer].numpy(), dl, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res.distributed[layer].numpy(), share, rtol=1e-5, atol=1e-6)
        cos = (share * dl).sum(1) / (np.linalg.norm(share, axis=1) * np.linalg.norm(dl, axis=1))
        np.testing.assert_allclose(res.cosine[layer], cos, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(res.deviation[layer], np.linalg.norm(dl - last, axis=1), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(res.distribution_error[layer], np.linalg.norm(share - dl, axis=1),
                                   rtol=1e-4, atol=1e-6)
        assert res.steps[layer].shape == (n,)
    rows = res.rows()
    assert len(rows) == n * len(LAYERS)
    assert {(r["case_id"], r["layer"]) for r in rows} == {(q.case_id, layer) for q in REQS for layer in LAYERS}


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


def _one_prompt_prob(model, tok, req, layer, vector):
    """P(o*|p) of one request, one prompt per forward pass, no padding: the mean over the context
    prompts of exp(mean log-prob of target_new's tokens), with ``vector`` added to block ``layer``'s
    output at the subject's last token."""
    target = tok(" " + req.target_new, add_special_tokens=False)["input_ids"]
    probs = []
    for c in flatten(TEMPLATES):
        template = c.replace("{}", req.prompt)
        prompt = tok(template.replace("{}", req.subject))["input_ids"]
        ids = torch.tensor([prompt + target])
        idx = subject_last_index(tok, template, req.subject)

        def add(h):
            h = h.clone()
            h[0, idx] += vector.to(h.dtype)
            return h
        with torch.no_grad(), edit_output(model, spec_for(model).block_name(layer), add):
            logp = F.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        steps = [float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(target)]
        probs.append(np.exp(np.mean(steps)))
    return float(np.mean(probs))


def test_contribution_scores_match_one_prompt_at_a_time(setup):
    model, tok, cfg, res = setup
    sc = analysis.contribution_scores(model, tok, REQS, res, TEMPLATES)
    zero = torch.zeros(model.get_input_embeddings().weight.shape[1])
    p0 = [_one_prompt_prob(model, tok, r, 0, zero) for r in REQS]
    np.testing.assert_allclose(sc.p0, p0, rtol=1e-4, atol=1e-7)
    for layer in LAYERS:
        for got, vectors in ((sc.p_distributed[layer], res.distributed[layer]),
                             (sc.p_direct[layer], res.delta_direct[layer])):
            want = [_one_prompt_prob(model, tok, r, layer, vectors[j]) for j, r in enumerate(REQS)]
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(sc.s_direct[layer], np.asarray(sc.p_direct[layer]) - np.asarray(p0),
                                   rtol=1e-3, atol=1e-6)
    assert set(sc.mean("direct")) == set(LAYERS)
    assert len(sc.rows()) == 2 * len(REQS) * len(LAYERS)


def test_single_layer_uses_distributed_share_and_restores(setup):
    model, tok, cfg, res = setup
    before = {layer: proj_weight(model, layer).detach().clone() for layer in LAYERS}
    for i, layer in enumerate(LAYERS):
        pre = {2: res.targets[2]}
        r = bluebook.edit(model, tok, REQS, "memit", hparams=cfg, distribution=SingleLayer(layer, direct=False),
                          precomputed_targets=pre, progress=False)
        assert r.layers == [layer]
        torch.testing.assert_close(r.residuals[layer].T.cpu(), res.delta_last / (len(LAYERS) - i),
                                   rtol=1e-4, atol=1e-5)
        r = bluebook.edit(model, tok, REQS, "memit", hparams=cfg, distribution=SingleLayer(layer, direct=True),
                          precomputed_targets={layer: res.targets[layer]}, progress=False)
        torch.testing.assert_close(r.residuals[layer].T.cpu(), res.delta_direct[layer], rtol=1e-4, atol=1e-5)
    out = analysis.single_layer_editing(model, tok, REQS, LAYERS, cfg, 0, residuals=res)
    for kind in ("distributed", "direct", "unedited"):
        assert 0 <= out[kind]["efficacy"] <= 100
    for layer in LAYERS:
        assert torch.equal(proj_weight(model, layer), before[layer])


def test_bound_checks_hold(setup):
    model, tok, cfg, res = setup
    tab = analysis.bound_checks(model, tok, REQS, LAYERS, cfg, residuals=res, templates=TEMPLATES)
    assert len(tab) == len(REQS) * len(LAYERS)
    assert all(r["holds"] for r in tab.rows)
    assert tab.holds_fraction == 1.0
    # each row is theory.check_bound on the keys and statistics read directly
    K = bluebook.read_states(model, tok, REQS, key_layers=[0], templates=TEMPLATES).keys[0].double()
    C = bluebook.layer_stats(model, tok, [0], cfg.stats, progress=False)[0].C.double()
    ref = theory.check_bound(K[:, :1], C, cfg.lam, res.delta_direct[0].double().T[:, :1],
                             res.delta_last.double().T[:, :1], 2)
    row = next(r for r in tab.rows if r["layer"] == 0 and r["batch"] == 0)
    for k, v in ref.to_dict().items():
        assert row[k] == pytest.approx(v, rel=1e-6), k
    sweep = analysis.batch_size_sweep(model, tok, REQS, [1, 2, 3, 8], LAYERS, cfg, residuals=res,
                                      templates=TEMPLATES)
    assert sorted({r["batch_size"] for r in sweep.rows}) == [1, 2, 3]
    assert all(r["holds"] for r in sweep.rows)


def test_deviation_is_the_difference_of_the_edits(setup):
    """The ``deviation`` of a whole-batch row is ‖Δ^{l*} − Δ^l‖₂ between the two updates the editor
    writes at layer ``l``: one from the direct residual, one from the distributed share."""
    model, tok, cfg, res = setup
    whole = analysis.batch_size_sweep(model, tok, REQS, [len(REQS)], LAYERS, cfg, residuals=res, templates=TEMPLATES)
    for layer in LAYERS:
        up = {}
        for direct in (True, False):
            source = layer if direct else 2                 # where the residual was optimised
            up[direct] = bluebook.edit(model, tok, REQS, "memit", hparams=cfg, progress=False,
                                       distribution=SingleLayer(layer, direct=direct),
                                       precomputed_targets={source: res.targets[source]}).deltas[layer].double()
        row = next(r for r in whole.rows if r["layer"] == layer)
        want = float(torch.linalg.matrix_norm(up[True] - up[False], ord=2))
        assert row["deviation"] == pytest.approx(want, rel=1e-4, abs=1e-7), layer
        assert row["distance"] == 2 - layer


def test_sequential_rows_use_the_earlier_keys(setup):
    model, tok, cfg, res = setup
    earlier = [EditRequest("{} was born in", s, "Paris", "Rome", case_id=10 + k)
               for k, s in enumerate(["Alan Turing", "Marie Curie", "Ada Lovelace", "Niels Bohr"])]
    seq = analysis.sequential_sweep(model, tok, REQS[:2], earlier, [0, 1, 2], LAYERS, cfg, residuals=None,
                                    templates=TEMPLATES, earlier_batch_size=2, envelope=True)
    assert sorted({r["seq_length"] for r in seq.rows}) == [0, 1, 2]
    assert all(r["holds"] for r in seq.rows)
    sub = res.select(range(2))
    for layer in LAYERS:
        K = bluebook.read_states(model, tok, REQS[:2], key_layers=[layer], templates=TEMPLATES).keys[layer].double()
        C = bluebook.layer_stats(model, tok, [layer], cfg.stats, progress=False)[layer].C.double()
        for t in (0, 1, 2):
            C_p = None
            if t:
                Kp = bluebook.read_states(model, tok, earlier[:2 * t], key_layers=[layer],
                                          templates=TEMPLATES).keys[layer]
                C_p = Kp.double() @ Kp.double().T
            row = next(r for r in seq.rows if r["layer"] == layer and r["seq_length"] == t)
            ref = theory.check_bound(K, C, cfg.lam, sub.delta_direct[layer].double().T, sub.delta_last.double().T,
                                     2 - layer, C_p=C_p)
            for k, v in ref.to_dict().items():
                assert row[k] == pytest.approx(v, rel=1e-5, abs=1e-9), (layer, t, k)
            cp_norm = 0.0 if C_p is None else float(torch.linalg.matrix_norm(C_p, ord=2))
            assert row["lemma43_cp_norm"] == pytest.approx(cp_norm, rel=1e-6, abs=1e-12)
            assert row["lemma43_key_gain"] == pytest.approx(theory.key_gain(K, C, cfg.lam, C_p), rel=1e-6)
            assert row["lemma43_q_norm_without_cp"] == pytest.approx(theory.q_norm(K, C, cfg.lam), rel=1e-6)
            assert row["lemma43_q_envelope"] == pytest.approx(theory.q_envelope(C, cfg.lam, C_p), rel=1e-5)
            assert row["lemma43_q_envelope_without_cp"] == pytest.approx(theory.q_envelope(C, cfg.lam), rel=1e-5)


def test_spearman_hand_computed():
    assert np.isnan(analysis.spearman([1, 1, 1], [1, 2, 3]))
    assert analysis.spearman([1, 2, 3, 4], [1, 3, 5, 9]) == pytest.approx(1.0)
    # rank differences (0, −1, 1, 0): ρ = 1 − 6·Σd² / (n(n² − 1)) = 1 − 12/60
    assert analysis.spearman([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(0.8)


def test_applied_sequence_sweep_measures_on_the_edited_model(setup):
    """t = 0 is the frozen sweep's t = 0; at t ≥ 1 the earlier batches are really applied (MEMIT-seq):
    C_p is the sum of their keys read on the model each was applied to, the current residuals are
    re-optimised on the edited model, and the weights come back bit-exactly."""
    from bluebook.model.weights import snapshot_weights

    model, tok, cfg, res = setup
    earlier = [EditRequest("{} was born in", s, "Paris", "Rome", case_id=10 + k)
               for k, s in enumerate(["Alan Turing", "Marie Curie", "Ada Lovelace", "Niels Bohr"])]
    before = snapshot_weights(model, LAYERS)
    applied = analysis.applied_sequence_sweep(model, tok, REQS[:2], earlier, [0, 2], LAYERS, cfg,
                                              templates=TEMPLATES, earlier_batch_size=2)
    after = snapshot_weights(model, LAYERS)
    assert all(torch.equal(before[l], after[l]) for l in LAYERS)
    frozen = analysis.sequential_sweep(model, tok, REQS[:2], earlier, [0], LAYERS, cfg, templates=TEMPLATES,
                                       earlier_batch_size=2)
    for layer in LAYERS:
        a = next(r for r in applied.rows if r["layer"] == layer and r["seq_length"] == 0)
        f = next(r for r in frozen.rows if r["layer"] == layer)
        for k in ("deviation", "bound", "q_norm"):
            assert a[k] == pytest.approx(f[k], rel=1e-5, abs=1e-9), (layer, k)
    # the same two batches applied by hand: C_p from keys read after each apply, fresh residuals after
    C0 = {l: s.C.double() for l, s in bluebook.layer_stats(model, tok, LAYERS, cfg.stats, progress=False).items()}
    state = bluebook.SequentialState()
    for s in (0, 2):
        bluebook.edit(model, tok, earlier[s:s + 2], "memit_seq", hparams=cfg, layers=LAYERS, state=state,
                      apply=True, templates=TEMPLATES, progress=False)
    try:
        res2 = analysis.residuals_per_layer(model, tok, REQS[:2], LAYERS, cfg, TEMPLATES)
        for layer in LAYERS:
            K = bluebook.read_states(model, tok, REQS[:2], key_layers=[layer], templates=TEMPLATES).keys[layer]
            ref = theory.check_bound(K.double(), C0[layer], cfg.lam, res2.delta_direct[layer].double().T,
                                     res2.delta_last.double().T, 2 - layer, C_p=state.C_p[layer].double())
            row = next(r for r in applied.rows if r["layer"] == layer and r["seq_length"] == 2)
            assert row["deviation"] == pytest.approx(ref.deviation, rel=1e-4, abs=1e-9), layer
            assert row["bound"] == pytest.approx(ref.bound, rel=1e-4, abs=1e-9), layer
            assert row["lemma43_cp_norm"] > 0
    finally:
        from bluebook.model.weights import restore_weights
        restore_weights(model, before)
    # and it differs from the frozen approximation (on the unedited model), which cannot see the edits
    frozen2 = analysis.sequential_sweep(model, tok, REQS[:2], earlier, [2], LAYERS, cfg, residuals=res.select(range(2)),
                                        templates=TEMPLATES, earlier_batch_size=2)
    gaps = [abs(next(r for r in applied.rows if r["layer"] == l and r["seq_length"] == 2)["deviation"]
                - next(r for r in frozen2.rows if r["layer"] == l)["deviation"]) for l in LAYERS[:-1]]
    assert max(gaps) > 1e-6
