"""Reliability: every bad input named in the error, exact restores after failures in each stage,
bitwise reproducibility with sampled templates, and the block-skipping path of the target loop."""

import pytest
import torch

import bluebook
from bluebook import EditRequest
from bluebook.core import solvers
from bluebook.core.config import EditConfig, StatsConfig, TargetConfig
from bluebook.metrics import evaluate_counterfact
from bluebook.model.hooks import hook_count, skip_blocks
from bluebook.model.specs import get_module, spec_for

REQ = EditRequest("The capital of {} is", "France", "Rome", "Paris", case_id=0,
                  paraphrase_prompts=["Paris is lovely. The capital of France is"],
                  neighborhood_prompts=["The capital of Germany is"])
CFG = EditConfig(layers=(0, 1, 2), lam=1e-2, target=TargetConfig(steps=3),
                 stats=StatsConfig(n_samples=20, max_len=48), template_seed=5)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(model, saved):
    return all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


# ---------------------------------------------------------------- bad input: field and value named
@pytest.mark.parametrize("make, match", [
    (lambda: EditRequest.from_prompt("The capital of Italy is", "France", "Rome"), r"'France' does not occur"),
    (lambda: EditRequest.from_prompt("France is next to France", "France", "Rome"), r"'France' occurs 2 times"),
    (lambda: EditRequest("The capital of France is", "France", "Rome"), r"exactly one '\{\}'"),
    (lambda: EditRequest("The capital of {} is", "France", ""), r"target_new.*''"),
    (lambda: EditRequest("The capital of {} is", "France", "   "), r"target_new.*'   '"),
    (lambda: EditRequest("The capital of {} is", "France", "Paris", "Paris"), r"'Paris' is identical"),
    (lambda: EditRequest("The capital of {} is", "  ", "Rome"), r"subject.*'  '"),
])
def test_request_errors_name_field_and_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_tokenizer_of_another_model_is_refused(smollm2, cache_dir):
    model, _ = bluebook.tiny_model("tiny-llama")
    _, big_tok = smollm2
    saved = _weights(model)
    with pytest.raises(ValueError, match=r"49152 tokens.*embeds only 2048"):
        bluebook.edit(model, big_tok, [REQ], "memit", hparams=CFG, progress=False)
    with pytest.raises(ValueError, match="another model"):
        bluebook.optimize_targets(model, big_tok, [REQ], 1, progress=False)
    assert _same(model, saved)


@pytest.mark.parametrize("kw, match", [
    (dict(method="memitt"), r"unknown method 'memitt'"),
    (dict(layers=[0, 7]), r"layer 7, out of range for a 4-layer model"),
    (dict(layers=[]), r"layers is empty"),
    (dict(method="alphaedit_blue", layers=[2]), r"BLUE needs at least two critical layers, got layers=\[2\]"),
])
def test_edit_arguments_named(kw, match, cache_dir):
    model, tok = bluebook.tiny_model("tiny-gpt2")
    saved = _weights(model)
    kw = {"method": "memit", **kw}
    hp = CFG if "layers" not in kw else {"layers": kw.pop("layers"), "stats": {"n_samples": 20, "max_len": 48}}
    with pytest.raises(ValueError, match=match):
        bluebook.edit(model, tok, [REQ], kw["method"], hparams=hp, progress=False)
    assert _same(model, saved)


def test_unsupported_model_type_named():
    from transformers import BertConfig, BertModel
    m = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    with pytest.raises(ValueError, match=r"model_type='bert'"):
        spec_for(m)


def test_statistics_with_nan_or_wrong_shape_refused():
    K, R = torch.randn(8, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    C = torch.eye(8, dtype=torch.float64)
    bad = C.clone()
    bad[2, 3] = float("nan")
    with pytest.raises(ValueError, match="C contains 1 NaN/inf"):
        solvers.memit_delta(K, R, bad, 1.0)
    with pytest.raises(ValueError, match=r"C must be \(8, 8\) to match K, got \(7, 7\)"):
        solvers.memit_delta(K, R, torch.eye(7, dtype=torch.float64), 1.0)


def test_singular_refused_and_ill_conditioned_warned_never_nan():
    K = torch.zeros(6, 2, dtype=torch.float64)
    R = torch.ones(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="singular"):
        solvers.memit_delta(K, R, torch.zeros(6, 6, dtype=torch.float64), 0.0)
    C = torch.diag(torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1e-15], dtype=torch.float64))
    with pytest.warns(RuntimeWarning, match="ill-conditioned"):
        D = solvers.memit_delta(torch.randn(6, 2, dtype=torch.float64) * 1e-9, R, C, 1.0)
    assert torch.isfinite(D).all()


# ---------------------------------------------------------------- exact restore after failures
@pytest.mark.parametrize("stage", ["stats", "targets", "keys", "solve", "post"])
def test_weights_bit_identical_after_failure_in_each_stage(stage, cache_dir, monkeypatch):
    import bluebook.core.solvers as solvers
    import bluebook.editor.loop as E
    model, tok = bluebook.tiny_model("tiny-llama")
    saved = _weights(model)

    def boom(*a, **k):
        raise RuntimeError(f"boom in {stage}")
    target = {"stats": (E, "layer_stats"), "targets": (E, "optimize_targets"), "keys": (E, "read_states"),
              "solve": (solvers, "memit_delta"), "post": (solvers, "rect_mask")}[stage]
    if stage == "stats":
        monkeypatch.setattr(*target, boom)
    elif stage == "solve":
        calls = {"n": 0}
        orig = solvers.memit_delta

        def second_fails(*a, **k):     # the first layer's update is already written when this raises
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("boom in solve")
            return orig(*a, **k)
        monkeypatch.setattr(solvers, "memit_delta", second_fails)
    else:
        monkeypatch.setattr(*target, boom)
    method = "rect" if stage == "post" else "memit"
    with pytest.raises(RuntimeError, match="boom"):
        bluebook.edit(model, tok, [REQ], method, hparams=CFG, progress=False, apply=True)
    assert _same(model, saved)
    assert hook_count(model) == 0


def test_weights_restored_after_failure_inside_evaluation_and_context(cache_dir, monkeypatch):
    import bluebook.metrics.counterfact as metrics_counterfact
    model, tok = bluebook.tiny_model("tiny-gptj")
    saved = _weights(model)
    res = bluebook.edit(model, tok, [REQ], "memit_blue", hparams=CFG, progress=False)
    assert _same(model, saved)
    monkeypatch.setattr(metrics_counterfact, "continuation_nll",
                        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("eval boom")))
    with pytest.raises(RuntimeError, match="eval boom"):
        with res:
            assert not _same(model, saved)
            evaluate_counterfact(model, tok, [REQ])
    assert _same(model, saved) and not res.applied
    res.apply()
    res.undo()
    assert _same(model, saved)


# ---------------------------------------------------------------- reproducibility
def test_same_seed_same_templates_targets_edits_metrics(cache_dir):
    model, tok = bluebook.tiny_model("tiny-llama")
    runs = []
    for _ in range(2):
        res = bluebook.edit(model, tok, [REQ], "alphaedit_blue", hparams=CFG, progress=False)
        with res:
            cases = evaluate_counterfact(model, tok, [REQ])
        runs.append((res, cases))
    (a, ca), (b, cb) = runs
    assert a.state.templates == b.state.templates and len([t for g in a.state.templates for t in g]) > 1
    for l in a.targets:
        assert torch.equal(a.targets[l].z, b.targets[l].z)
    for l in a.deltas:
        assert torch.equal(a.deltas[l], b.deltas[l])
    assert ca == cb
    other = bluebook.edit(model, tok, [REQ], "alphaedit_blue", hparams={**{"template_seed": 6}, "layers": [0, 1, 2],
                                                                        "lam": 1e-2, "target": {"steps": 3},
                                                                        "stats": {"n_samples": 20, "max_len": 48}},
                          progress=False)
    assert other.state.templates != a.state.templates


# ---------------------------------------------------------------- block skipping in the v* loop
@pytest.mark.parametrize("kind", ["tiny-gpt2", "tiny-gptj", "tiny-llama"])
def test_targets_with_and_without_block_skipping_agree(kind, monkeypatch):
    import bluebook.fast.targets as T
    model, tok = bluebook.tiny_model(kind)
    reqs = [REQ, EditRequest("{} plays the sport of", "Michael Jordan", "soccer", "basketball")]
    tmpl = (("{}",), ("The day was long. {}", "Because. {}"))
    cfg = TargetConfig(steps=5)
    fast = bluebook.optimize_targets(model, tok, reqs, 2, cfg, tmpl, progress=False)
    assert T.blocks_return_tensors(model, 2)
    monkeypatch.setattr(T, "blocks_return_tensors", lambda *a: False)
    slow = bluebook.optimize_targets(model, tok, reqs, 2, cfg, tmpl, progress=False)
    assert (fast.z - slow.z).abs().max() < 1e-5
    assert fast.steps == slow.steps


def test_skip_blocks_puts_forwards_back_on_error():
    model, tok = bluebook.tiny_model("tiny-llama")
    blocks = [get_module(model, spec_for(model).block_name(i)) for i in range(3)]
    sentinel = blocks[1].forward
    blocks[1].forward = sentinel          # an instance attribute, like accelerate's hooks set
    with pytest.raises(RuntimeError, match="inside"):
        with skip_blocks(model, 2, torch.zeros(1, 1, 64)):
            assert blocks[0].forward(torch.ones(2)) is not None
            raise RuntimeError("inside")
    assert "forward" not in blocks[0].__dict__ and "forward" not in blocks[2].__dict__
    assert blocks[1].__dict__["forward"] is sentinel


def test_diverged_targets_stop_the_edit_and_leave_the_weights(monkeypatch):
    """A v* optimisation that returns NaN (as fp16 overflow can) raises a clear error naming the
    layer and the requests, and no weight changes."""
    import dataclasses

    import bluebook
    import bluebook.editor.loop as loop
    from bluebook.model.loading import tiny_model

    model, tok = tiny_model("tiny-gpt2")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    real = loop.optimize_targets

    def poisoned(*a, **k):
        tr = real(*a, **k)
        z = tr.z.clone()
        z[1, 0] = float("nan")
        return dataclasses.replace(tr, z=z)
    monkeypatch.setattr(loop, "optimize_targets", poisoned)
    reqs = bluebook.load_counterfact(n=2)
    with pytest.raises(FloatingPointError, match=rf"not finite .* requests \[{reqs[1].case_id}\]"):
        bluebook.edit(model, tok, reqs, "memit_blue", hparams={"target": {"steps": 2},
                                                               "stats": {"n_samples": 20, "max_len": 32}},
                      progress=False)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


# ---------------------------------------------------------------- bad or unusual input, end to end
_HP = {"layers": [0, 1], "target": {"steps": 2}, "stats": {"n_samples": 20, "max_len": 48},
       "context_templates": [["{}"]]}


@pytest.fixture(scope="module")
def tiny_llama():
    return bluebook.tiny_model("tiny-llama")


@pytest.mark.parametrize("reqs, match", [
    ([EditRequest("The capital of {} is", "France", "Rome " * 400, "Paris", case_id=5)],
     r"case_id 5\): the prompt with target_new .* 400 tokens.* more than the model's context of 256"),
    ([EditRequest("The capital of {} is", "France", "Rome", "Paris", case_id=7),
      EditRequest("{} plays", "Michael Jordan", "soccer", "basketball", case_id=7)],
     r"case_id 7 occurs twice in one batch \(requests 0 and 1\)"),
])
def test_bad_batches_are_refused_naming_field_and_value(tiny_llama, cache_dir, reqs, match):
    model, tok = tiny_llama
    before = _weights(model)
    with pytest.raises(ValueError, match=match):
        bluebook.edit(model, tok, reqs, "memit_blue", hparams=_HP, progress=False)
    assert _same(model, before)


class _MergingTokenizer:
    """Characters as tokens, except that "!," is one token (as byte-level BPE merges it)."""

    def __call__(self, text, add_special_tokens=True):
        ids, i = [], 0
        while i < len(text):
            if text.startswith("!,", i):
                ids.append(1000)
                i += 2
            else:
                ids.append(ord(text[i]))
                i += 1
        return {"input_ids": ids}


def test_subject_merging_with_the_next_token_is_warned():
    """CounterFact case 1003 ("Comic High!" before ", created in"): SmolLM2 merges "!," into one token."""
    from bluebook.model.tokens import check_requests
    tok = _MergingTokenizer()
    merged = EditRequest("{}, created in", "Comic High!", "Japan", "France", case_id=1003)
    with pytest.warns(RuntimeWarning, match=r"case_id 1003\): the last token of subject 'Comic High!' merges"):
        check_requests(None, tok, [merged])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_requests(None, tok, [EditRequest("{} was created in", "Comic High!", "Japan", "France")])


@pytest.mark.parametrize("req", [
    EditRequest("{} is where France meets Paris", "France", "Rome", "Paris", case_id=1),    # subject twice in the text
    EditRequest("Die Hauptstadt von {} ist", "Österreich", "Zürich", "Wien", case_id=3),     # non-ASCII
    EditRequest("{}的首都是", "日本", "大阪", "东京", case_id=4),                              # CJK
    EditRequest("The capital of {} is", "France", "Rome", "Paris", case_id=8),               # no paraphrases/neighbours
], ids=["subject-twice", "non-ascii", "cjk", "no-eval-prompts"])
def test_legitimate_unusual_requests_edit_the_key_at_the_template_position(tiny_llama, cache_dir, req):
    """The key is the subject's last token at the {} position (not another occurrence), the edit
    realises its target there, and undo restores the weights bit for bit."""
    from bluebook.core.keys import read_states
    model, tok = tiny_llama
    before = _weights(model)
    res = bluebook.edit(model, tok, [req], "memit_blue", hparams={**_HP, "target": {"steps": 8}}, progress=False)
    assert sorted(res.deltas) == [0, 1] and all(torch.isfinite(d).all() for d in res.deltas.values())
    prefix = req.prompt[: req.prompt.index("{}")]
    k_idx = len(tok(prefix + req.subject)["input_ids"]) - 1
    st = read_states(model, tok, [req], key_layers=[0], hidden_layers=[0], templates=(("{}",),))
    ids = tok(req.prompt.replace("{}", req.subject))["input_ids"]
    assert 0 <= k_idx < len(ids)
    # the first updated layer's key, read on the unedited model, is the one the edit solved for
    assert torch.allclose(st.keys[0][:, 0], res.keys[0][:, 0], atol=1e-5)
    res.apply()
    res.undo()
    assert _same(model, before)


def test_a_tokenizer_without_pad_token_gives_the_same_edit(tiny_llama, cache_dir):
    """Padding is masked everywhere, so which id pads (the pad token, else end-of-text, else 0)
    cannot change an edit: bit-identical updates with the pad token removed."""
    import copy
    model, tok = tiny_llama
    reqs = [EditRequest("The capital of {} is", "France", "Rome", "Paris", case_id=1),
            EditRequest("{} plays the sport of", "Michael Jordan", "soccer", "basketball", case_id=2)]
    a = bluebook.edit(model, tok, reqs, "memit_blue", hparams=_HP, progress=False)
    bare = copy.deepcopy(tok)
    bare.pad_token = None
    assert bare.pad_token_id is None
    b = bluebook.edit(model, bare, reqs, "memit_blue", hparams=_HP, progress=False)
    assert all(torch.equal(a.deltas[l], b.deltas[l]) for l in a.deltas)


def test_a_model_on_the_meta_device_is_refused(cache_dir):
    model, tok = bluebook.tiny_model("tiny-llama")
    with pytest.raises(ValueError, match=r"on the 'meta' device .* never loaded"):
        bluebook.edit(model.to("meta"), tok, [EditRequest("The capital of {} is", "France", "Rome", "Paris")],
                      "memit_blue", hparams=_HP, progress=False)


def test_batch_larger_than_the_statistics_rank(cache_dir):
    """Statistics from 16 tokens give a C of rank ≤ 16 on a 256-wide key space. MEMIT's system
    λC + KKᵀ is then singular for any batch that does not fill the rest: refused, naming the layer and
    the cause, weights untouched (before, a general solve returned one of infinitely many answers
    with only a warning). AlphaEdit's system (P(KKᵀ) + αI) stays regular and edits."""
    model, tok = bluebook.tiny_model("tiny-gpt2")
    reqs = bluebook.load_counterfact(n=24)                       # a batch of 24 > rank(C) ≤ 16
    hp = {"layers": [1, 2], "lam": 1.0, "target": {"steps": 2}, "stats": {"n_samples": 2, "max_len": 8},
          "context_templates": [["{}"]]}
    saved = _weights(model)
    singular = r"layer 1: memit_delta: the system matrix \(256×256\) is singular.*more tokens"
    with pytest.raises(ValueError, match=singular):
        bluebook.edit(model, tok, reqs, "memit", hparams=hp, progress=False)
    assert _same(model, saved)
    res = bluebook.edit(model, tok, reqs, "alphaedit", hparams=hp, progress=False)
    assert all(torch.isfinite(d).all() for d in res.deltas.values()) and _same(model, saved)
    # with enough tokens the same batch edits
    hp_ok = dict(hp, stats={"n_samples": 40, "max_len": 64})
    res = bluebook.edit(model, tok, reqs, "memit", hparams=hp_ok, progress=False)
    assert all(torch.isfinite(d).all() for d in res.deltas.values())


def test_a_model_split_across_devices_is_refused():
    """A model whose weights sit on two devices (``device_map="auto"`` across GPUs, or GPU + CPU
    offload) is refused before any work, naming the devices and a tensor on each. Checked on a
    stand-in holding the parameters' devices: no second device exists on the test machine."""
    from types import SimpleNamespace

    from bluebook.model.device import check_materialized

    def fake(*devices):
        params = [(f"layer{i}.weight", SimpleNamespace(device=torch.device(d))) for i, d in enumerate(devices)]
        return SimpleNamespace(named_parameters=lambda: iter(params))

    check_materialized(fake("cpu", "cpu"))                                  # one device: fine
    with pytest.raises(ValueError, match=r"split across devices: cpu \(e.g. 'layer0.weight'\), cuda:1 "
                                         r"\(e.g. 'layer1.weight'\).*one device"):
        check_materialized(fake("cpu", "cuda:1", "cpu"))


@pytest.mark.parametrize("method,overflow_at", [("memit", "every"), ("memit_blue", "every"), ("memit", "last")])
def test_update_overflowing_a_half_precision_weight_is_refused_and_nothing_written(monkeypatch, method, overflow_at):
    """No NaN/inf is ever written into a weight: an update that is finite in float64 but overflows
    float16 (|W + Δ| > 65504) stops the edit with a FloatingPointError naming the layer, both inside
    the loop (MEMIT-BLUE adds its first layer's update before the second v*) and when the result is
    applied, and every weight is bit-identical to before."""
    import warnings

    from bluebook.model.loading import tiny_model

    model, tok = tiny_model("tiny-gpt2")
    model = model.to(torch.float16)
    before = _weights(model)
    hp = {"layers": [0, 1], "target": {"steps": 2}, "stats": {"n_samples": 20, "max_len": 32},
          "context_templates": [["{}"]]}
    reqs = bluebook.load_counterfact(n=2)
    real, calls = solvers.memit_delta, []

    def huge(*a, **k):
        D = real(*a, **k)
        calls.append(1)
        if overflow_at == "last" and len(calls) < 2:    # only the last layer's update overflows: before
            return D                                    # the check, apply() wrote it as inf, silently
        return D + 1e6 * torch.sign(D)                  # finite in float64, inf once cast to float16
    monkeypatch.setattr(solvers, "memit_delta", huge)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # the half-precision cast warning
        with pytest.raises(FloatingPointError, match=r"layer \d: W \+ Δ has \d+ NaN/inf entries in torch.float16"):
            bluebook.edit(model, tok, reqs, method, hparams=hp, apply=True, progress=False)
    assert _same(model, before)
