"""The edit engine on tiny random models of each family (GPT-2 Conv1D, GPT-J, Llama with BOS)."""
import pytest
import torch

import bluebook
from bluebook import EditRequest
from bluebook.core.config import EditConfig, StatsConfig, TargetConfig
from bluebook.core.keys import read_states
from bluebook.core.targets import optimize_target_plain
from bluebook.editor.targets import optimize_targets
from bluebook.model.hooks import Trace, hook_count
from bluebook.model.specs import math_weight, proj_weight, spec_for
from bluebook.model.tokens import subject_last_index
from bluebook.model.weights import patched_weights

REQS = [
    EditRequest("The capital of {} is", "France", "Rome", "Paris", case_id=0),
    EditRequest("{} plays the sport of", "Michael Jordan", "soccer", "basketball", case_id=1),
    EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", "French", case_id=2),
]
TEMPLATES = (("{}",), ("The day was long. {}", "Because I said so and then left. {}"))
TCFG = TargetConfig(steps=6, lr=0.5)


def test_targets_match_plain_reference_loop(tiny):
    model, tok = tiny
    res = optimize_targets(model, tok, REQS, 2, TCFG, TEMPLATES, progress=False)
    for j, r in enumerate(REQS):
        z = optimize_target_plain(model, tok, r, 2, TCFG, TEMPLATES).z[0]
        assert (res.z[j] - z).abs().max() < 1e-4


def test_batched_targets_equal_one_by_one(tiny):
    model, tok = tiny
    res = optimize_targets(model, tok, REQS, 1, TCFG, TEMPLATES, progress=False)
    for j, r in enumerate(REQS):
        one = optimize_targets(model, tok, [r], 1, TCFG, TEMPLATES, progress=False)
        assert (res.z[j] - one.z[0]).abs().max() < 1e-4
        assert res.steps[j] == one.steps[0]
    assert hook_count(model) == 0


def test_targets_early_stop_and_traces():
    model, tok = bluebook.tiny_model("tiny-llama")
    cfg = TargetConfig(steps=5, lr=0.5, early_stop=1e9)      # everything stops at iteration 0
    res = optimize_targets(model, tok, REQS, 1, cfg, TEMPLATES, progress=False)
    assert res.steps == [0, 0, 0]
    assert torch.equal(res.delta, torch.zeros_like(res.delta))
    assert all(len(t) == 1 for t in res.loss)
    cfg = TargetConfig(steps=4, lr=0.5, early_stop=-1.0)    # never stops early
    res = optimize_targets(model, tok, REQS, 1, cfg, TEMPLATES, progress=False)
    assert res.steps == [4, 4, 4] and all(len(t) == 4 for t in res.loss)


def test_target_timing_records_each_iteration_and_chunk():
    model, tok = bluebook.tiny_model("tiny-llama")
    loss0 = optimize_targets(model, tok, REQS, 1, TargetConfig(steps=1), TEMPLATES, progress=False).loss
    # the request with the smallest initial loss stops at iteration 0, the others run all 3
    stop = sorted(t[0] for t in loss0)[0] + 1e-6
    cfg = TargetConfig(steps=3, lr=0.5, early_stop=stop)
    res = optimize_targets(model, tok, REQS, 1, cfg, TEMPLATES, progress=False, batch_size=2)
    assert sorted(res.steps) == [0, 3, 3]
    assert [t["requests"] for t in res.timing] == [2, 1]                  # one entry per chunk
    for t in res.timing:
        assert t["prefix_seconds"] >= 0 and len(t["step_seconds"]) == len(t["step_active"])
        assert all(s > 0 for s in t["step_seconds"])
    active = [t["step_active"] for t in res.timing]
    first = min(range(3), key=lambda j: loss0[j][0])
    want = [[2, 1, 1] if first < 2 else [2, 2, 2], [1, 1, 1] if first < 2 else [1]]
    assert active == want


def test_targets_clamp_norm():
    model, tok = bluebook.tiny_model("tiny-gpt2")
    cfg = TargetConfig(steps=8, lr=5.0, clamp_norm_factor=0.1, weight_decay=0.0)
    res = optimize_targets(model, tok, REQS, 1, cfg, TEMPLATES, progress=False)
    assert (res.delta.norm(dim=1) <= 0.1 * res.h0.norm(dim=1) * (1 + 1e-5)).all()


def test_patched_weights_restores_bit_exactly_on_error(tiny):
    model, tok = tiny
    before = {l: proj_weight(model, l).detach().clone() for l in (0, 1)}
    d = math_weight(model, 0).shape
    with pytest.raises(RuntimeError):
        with patched_weights(model, {0: torch.randn(d), 1: torch.randn(d)}):
            assert not torch.equal(proj_weight(model, 0), before[0])
            raise RuntimeError("boom")
    for l in (0, 1):
        assert torch.equal(proj_weight(model, l), before[l])


def test_trace_shapes_and_no_hooks_left(tiny):
    model, tok = tiny
    spec = spec_for(model)
    enc = tok(["a b c", "hello"], return_tensors="pt", padding=True)
    with Trace(model, [spec.block_name(1), spec.proj_name(1)], inputs=True, stop_after=spec.block_name(1)) as tr:
        out = tr.run(model, **enc)
    assert out is None
    assert tr.outputs[spec.block_name(1)].shape[:2] == enc["input_ids"].shape
    assert tr.inputs[spec.proj_name(1)].shape[-1] == math_weight(model, 1).shape[1]
    assert hook_count(model) == 0
    with pytest.raises(ValueError):
        with Trace(model, [spec.block_name(0)]):
            raise ValueError("x")
    assert hook_count(model) == 0


def _cfg(layers, **kw):
    return EditConfig(layers=tuple(layers), lam=kw.pop("lam", 1e-2), alpha=kw.pop("alpha", 1e-2),
                      target=TargetConfig(steps=kw.pop("steps", 5), lr=0.5),
                      stats=StatsConfig(n_samples=kw.pop("n", 40), max_len=64),
                      context_templates=TEMPLATES, **kw)


@pytest.fixture
def tiny_llama(cache_dir):
    return bluebook.tiny_model("tiny-llama")


@pytest.mark.parametrize("method", ["memit", "memit_blue", "alphaedit", "alphaedit_blue", "rect", "rect_blue",
                                    "prune", "prune_blue", "memit_seq", "memit_seq_blue"])
def test_every_method_runs_and_restores(tiny_llama, method):
    model, tok = tiny_llama
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = bluebook.edit(model, tok, REQS[:2], method, hparams=_cfg([0, 1, 2]), progress=False)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    expect = [0, 2] if method.endswith("_blue") else [0, 1, 2]
    assert res.layers == expect
    assert sorted(res.deltas) == expect
    assert res.changed_layers() == expect
    res.apply()
    name = spec_for(model).proj_name
    changed = [l for l in range(4) if not torch.equal(proj_weight(model, l), before[name(l) + ".weight"])]
    assert changed == expect                     # BLUE: exactly two layers change
    res.undo()
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n


def test_one_layer_edit_with_small_lambda_writes_the_residual(cache_dir):
    model, tok = bluebook.tiny_model("tiny-gpt2")
    res = bluebook.edit(model, tok, REQS, "memit", hparams=_cfg([2], lam=1e-6, steps=4), progress=False)
    K, R = res.keys[2], res.residuals[2]
    torch.testing.assert_close(res.deltas[2] @ K, R, atol=1e-3 * R.abs().max().item(), rtol=1e-3)
    with res:
        st = read_states(model, tok, REQS, hidden_layers=[2])
    z = res.targets[2].z.T
    # keys are template averages, so the bare prompt lands close to (not exactly on) z
    assert ((st.hidden[2] - z).norm(dim=0) / z.norm(dim=0)).max() < 5e-2


def test_conv1d_update_is_transposed_in_storage(cache_dir):
    model, tok = bluebook.tiny_model("tiny-gpt2")
    res = bluebook.edit(model, tok, REQS[:1], "memit", hparams=_cfg([1]), progress=False)
    W = proj_weight(model, 1)
    assert W.shape == res.deltas[1].T.shape          # Conv1D stores (m, d)
    before = W.detach().clone()
    with res:
        torch.testing.assert_close(proj_weight(model, 1) - before, res.deltas[1].T)


def test_weights_restored_when_edit_fails_midway(tiny_llama, monkeypatch):
    model, tok = tiny_llama
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    import bluebook.core.methods as M
    calls = {"n": 0}
    orig = M.solvers.memit_delta

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("solver exploded")
        return orig(*a, **k)
    monkeypatch.setattr(M.solvers, "memit_delta", flaky)
    with pytest.raises(RuntimeError, match="exploded"):
        bluebook.edit(model, tok, REQS[:2], "memit", hparams=_cfg([0, 1, 2]), progress=False)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    assert hook_count(model) == 0


def test_sequential_state_accumulates_and_roundtrips(tiny_llama, tmp_path):
    model, tok = tiny_llama
    state = bluebook.SequentialState()
    bluebook.edit(model, tok, REQS[:2], "alphaedit", hparams=_cfg([0, 1]), state=state, apply=True,
                  progress=False)
    assert state.n_batches == 1 and set(state.C_p) == {0, 1}
    cp1 = state.C_p[0].clone()
    bluebook.edit(model, tok, REQS[2:], "alphaedit", hparams=_cfg([0, 1]), state=state, apply=True, progress=False)
    assert state.n_batches == 2 and not torch.equal(state.C_p[0], cp1)
    path = state.save(tmp_path / "state.safetensors")
    back = bluebook.SequentialState.load(path)
    assert back.n_batches == 2 and torch.equal(back.C_p[0], state.C_p[0])
    with pytest.raises(ValueError, match="method"):
        bluebook.edit(model, tok, REQS[:1], "memit", hparams=_cfg([0, 1]), state=state, progress=False)


@pytest.mark.parametrize("bad,match", [
    (dict(layers=[0, 9]), "out of range"),
    (dict(layers=[]), "empty"),
    (dict(method="memitt"), "unknown method"),
    (dict(method="memit_blue", layers=[1]), "two"),
    (dict(requests=[]), "empty"),
])
def test_edit_bad_input(tiny_llama, bad, match):
    model, tok = tiny_llama
    kw = dict(requests=REQS[:1], method="memit", layers=None)
    kw.update(bad)
    cfg = _cfg(kw.pop("layers") if kw.get("layers") is not None else [0, 1]) if "layers" not in bad else None
    with pytest.raises(ValueError, match=match):
        if cfg is None:
            bluebook.edit(model, tok, kw["requests"], kw["method"], hparams=_cfg([0, 1]), layers=bad["layers"],
                          progress=False)
        else:
            bluebook.edit(model, tok, kw["requests"], kw["method"], hparams=cfg, progress=False)


def test_request_validation_errors():
    with pytest.raises(ValueError, match="exactly one"):
        EditRequest("The capital of France is", "France", "Rome")
    with pytest.raises(ValueError, match="target_new"):
        EditRequest("The capital of {} is", "France", "  ")
    with pytest.raises(ValueError, match="identical"):
        EditRequest("The capital of {} is", "France", "Paris", "Paris")
    with pytest.raises(ValueError, match="does not occur"):
        EditRequest.from_prompt("The capital of Spain is", "France", "Rome")
    r = EditRequest.from_prompt("The capital of France is", "France", "Rome")
    assert r.prompt == "The capital of {} is"


def test_unknown_architecture_is_refused():
    from transformers import BertConfig
    with pytest.raises(ValueError, match="bert"):
        bluebook.spec_for(BertConfig())


def test_missing_model_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        bluebook.load_model(str(tmp_path / "does-not-exist"))


def test_prune_equals_memit_below_the_bound_and_finalize_is_paper_form(tiny_llama):
    model, tok = tiny_llama
    cfg = _cfg([0, 1], lam=1e3)
    a = bluebook.edit(model, tok, REQS[:2], "memit", hparams=cfg, progress=False)
    from bluebook.core.solvers import top_singular_value
    for l, d in a.deltas.items():
        assert top_singular_value(d) < top_singular_value(math_weight(model, l))
    st = bluebook.SequentialState()
    b = bluebook.edit(model, tok, REQS[:2], "prune", hparams=cfg, state=st, apply=True, progress=False)
    for l in a.deltas:                          # tiny edits: no singular value above σ_max(W0)
        torch.testing.assert_close(a.deltas[l], b.deltas[l], atol=1e-6, rtol=1e-5)
    before = {l: proj_weight(model, l).detach().clone() for l in (0, 1)}
    assert st.finalize(model) == {}             # paper form: nothing more to do at the end
    for l in (0, 1):
        assert torch.equal(proj_weight(model, l), before[l])
    b.undo()


def test_sampled_templates_are_kept_for_the_whole_run(tiny_llama):
    model, tok = tiny_llama
    cfg = EditConfig(layers=(0, 1), lam=1e-2, target=TargetConfig(steps=2), stats=StatsConfig(n_samples=30, max_len=64))
    st = bluebook.SequentialState()
    bluebook.edit(model, tok, REQS[:1], "memit", hparams=cfg, state=st, apply=True, progress=False)
    first = st.templates
    bluebook.edit(model, tok, REQS[1:2], "memit", hparams=cfg, state=st, apply=True, progress=False)
    assert st.templates == first and len(first) == 2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_model_edits_with_a_warning(cache_dir, dtype):
    model, tok = bluebook.tiny_model("tiny-llama")
    model = model.to(dtype)
    before = {l: proj_weight(model, l).detach().clone() for l in (0, 1)}
    with pytest.warns(RuntimeWarning, match="cast back"):
        res = bluebook.edit(model, tok, REQS[:2], "memit", hparams=_cfg([0, 1], n=20), progress=False)
    for l in (0, 1):
        assert torch.equal(proj_weight(model, l), before[l])
        assert torch.isfinite(res.deltas[l]).all()
    res.apply()
    assert proj_weight(model, 1).dtype == dtype and not torch.equal(proj_weight(model, 1), before[1])
    res.undo()
    assert torch.equal(proj_weight(model, 1), before[1])


def test_shared_template_stems_give_the_same_prefix_cache(tiny, monkeypatch):
    """Running each context template's common tokens once (then only each row's remainder on top)
    gives the keys/values that running every row's whole prefix gives."""
    from bluebook.core.objective import build_rows
    from bluebook.fast import prefix_cache as T
    model, tok = tiny
    rows = build_rows(tok, REQS, TEMPLATES, "{} is a")
    stems = T.shared_stems(rows)
    assert set(stems) == {1, 2} and all(len(s) >= 5 for s in stems.values())
    assert -1 not in stems and 0 not in stems          # the KL prompt and the bare template share nothing
    with_stems = T.PrefixCache(model, rows, 0, "cpu")
    monkeypatch.setattr(T, "shared_stems", lambda rows: {})
    without = T.PrefixCache(model, rows, 0, "cpu")
    for g in with_stems.groups:
        assert with_stems.groups[g] == without.groups[g]
        for (k1, v1), (k2, v2) in zip(with_stems.kv[g], without.kv[g]):
            assert k1.shape == k2.shape
            assert (k1 - k2).abs().max() < 1e-5 and (v1 - v2).abs().max() < 1e-5


def test_keys_and_hidden_equal_a_full_prompt_pass_one_prompt_at_a_time(tiny):
    """read_states runs only the tokens up to the subject's last token, length-sorted and batched;
    the keys (template means) and hidden states are those of each whole prompt run alone."""
    model, tok = tiny
    spec = spec_for(model)
    st = read_states(model, tok, REQS, key_layers=[1], hidden_layers=[2], templates=TEMPLATES)
    for j, r in enumerate(REQS):
        group_means = []
        for group in TEMPLATES:
            ks = []
            for c in group:
                t = c.replace("{}", r.prompt)
                i = subject_last_index(tok, t, r.subject)
                enc = tok(t.replace("{}", r.subject), return_tensors="pt")
                with Trace(model, [spec.proj_name(1)], inputs=True, outputs=False) as tin, \
                        Trace(model, [spec.block_name(2)]) as tout:
                    with torch.no_grad():
                        model(**enc)
                ks.append(tin.inputs[spec.proj_name(1)][0, i])
                if c == "{}":
                    torch.testing.assert_close(st.hidden[2][:, j], tout.outputs[spec.block_name(2)][0, i].float(),
                                               atol=1e-5, rtol=1e-5)
            group_means.append(torch.stack(ks).mean(0))
        torch.testing.assert_close(st.keys[1][:, j], torch.stack(group_means).mean(0).float(), atol=1e-5, rtol=1e-5)


MORE_REQS = REQS + [
    EditRequest("{} is a citizen of", "Lionel Messi", "Japan", "Argentina", case_id=3),
    EditRequest("The official language of {} is", "Brazil", "German", "Portuguese", case_id=4),
    EditRequest("{} was developed by", "Windows 95", "Google", "Microsoft", case_id=5),
]


def test_regrouped_suffixes_give_the_same_targets(tiny, monkeypatch):
    """As requests stop early their rows leave the suffix groups, which are then rebuilt from the
    rows still optimised (cached keys/values and block outputs copied): every request's z and step
    count equal optimising it alone (where nothing is ever regrouped)."""
    from bluebook.fast import prefix_cache as T
    model, tok = tiny
    kw = dict(steps=6, lr=0.5, weight_decay=0.0, clamp_norm_factor=100.0)   # losses fall on these models
    free = TargetConfig(early_stop=-1.0, **kw)
    alone = [optimize_targets(model, tok, [r], 1, free, TEMPLATES, progress=False) for r in MORE_REQS]
    # an early-stop threshold in the middle of the widest gap between the losses seen, so that some
    # requests stop at different iterations and rounding cannot move a stop
    seen = sorted(x for res in alone for x in res.loss[0])
    lo, hi = len(seen) // 4, 3 * len(seen) // 4
    a = max(range(lo, hi), key=lambda i: seen[i + 1] - seen[i])
    cfg = TargetConfig(early_stop=(seen[a] + seen[a + 1]) / 2, **kw)
    calls = []
    orig = T.PrefixCache.regroup
    monkeypatch.setattr(T.PrefixCache, "regroup", lambda self, rs: (calls.append(len(rs)), orig(self, rs)))
    res = optimize_targets(model, tok, MORE_REQS, 1, cfg, TEMPLATES, progress=False)
    assert calls, "no request stopped early enough to regroup"
    assert len(set(res.steps)) >= 2
    monkeypatch.setattr(T.PrefixCache, "regroup", orig)
    for j, r in enumerate(MORE_REQS):
        one = optimize_targets(model, tok, [r], 1, cfg, TEMPLATES, progress=False)
        assert res.steps[j] == one.steps[0]
        assert (res.z[j] - one.z[0]).abs().max() < 1e-4


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
@pytest.mark.parametrize("dtype,tol", [(torch.float16, 0.01), (torch.bfloat16, 0.05)])
def test_half_precision_edit_is_within_the_stated_tolerance_of_float32(cache_dir, name, dtype, tol):
    """The same BLUE edit on a float16 (bfloat16) copy of a model: every update Δ within 1 % (5 %)
    relative Frobenius distance of the float32 one (measured: at most 0.5 % and 3.3 %), same v* steps."""
    hp = {"layers": [0, 1], "target": {"steps": 6}, "stats": {"n_samples": 20, "max_len": 48},
          "context_templates": [["{}"]]}
    m32, tok = bluebook.tiny_model(name)
    ref = bluebook.edit(m32, tok, REQS[:2], "memit_blue", hparams=hp, progress=False)
    half, tok = bluebook.tiny_model(name)
    half = half.to(dtype)
    with pytest.warns(RuntimeWarning, match="cast back"):
        got = bluebook.edit(half, tok, REQS[:2], "memit_blue", hparams=hp, progress=False)
    assert sorted(got.deltas) == sorted(ref.deltas) == [0, 1]
    for l in ref.deltas:
        a, b = got.deltas[l].double(), ref.deltas[l].double()
        assert float((a - b).norm() / b.norm()) < tol, l
    for l in ref.targets:
        assert got.targets[l].steps == ref.targets[l].steps
