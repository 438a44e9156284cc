"""Causal tracing on the tiny random models: shapes, exactness of the batched restoration,
reproducibility, hook hygiene, and the layer-window heuristic."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from bluebook import locate
from bluebook.locate import (
    ROW_LABELS,
    TraceResult,
    TraceSummary,
    filter_known,
    peak_layer,
    propose_critical_layers,
    subject_noise,
    subject_range,
    target_token_id,
    trace_many,
    trace_prompt,
)
from bluebook.model.hooks import Trace, edit_output, hook_count
from bluebook.model.loading import tiny_model
from bluebook.model.specs import get_module, num_layers, spec_for
from bluebook.model.tokens import subject_last_index

KINDS = ["tiny-gpt2", "tiny-gptj", "tiny-llama"]
TEMPLATE, SUBJECT, TARGET = "The mother tongue of {} is", "Danielle Darrieux", "French"
START_TEMPLATE = "{} plays the"  # subject first: exercises the no-prefix path
NOISE = 1.0  # the tiny models' embeddings are small; a large noise makes low != high


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # the tiny models' matmuls are microseconds: thread hand-offs would dominate on a busy machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module", params=KINDS)
def tiny(request):
    torch.manual_seed(0)
    model, tok = tiny_model(request.param)
    return model, tok


def _patched_blocks(model):
    spec = spec_for(model)
    return [layer for layer in range(num_layers(model))
            if "forward" in get_module(model, spec.block_name(layer)).__dict__]


def reference_prob(model, tok, template, subject, target, restore, noise, n_samples, seed):
    """Slow reference: full-sequence corrupted runs with simple hooks.

    ``restore`` maps ``(kind, layer)`` to a list of positions whose clean output is written back.
    """
    spec = spec_for(model)
    prompt = template.replace("{}", subject)
    first, last = subject_range(tok, template, subject)
    tid = target_token_id(tok, prompt, target)
    ids = torch.tensor([tok(prompt)["input_ids"]])
    names = {(k, layer): {"block": spec.block_name, "mlp": spec.mlp_name, "attn": spec.attn_name}[k](layer)
             for (k, layer) in restore}
    with torch.no_grad():
        with Trace(model, list(names.values())) as tr:
            model(input_ids=ids)
        clean = {key: tr.outputs[name][0] for key, name in names.items()}
        d = get_module(model, spec.embed).weight.shape[1]
        eps = subject_noise(n_samples, last - first + 1, d, noise, seed)

        def add_noise(h):
            h = h.clone()
            h[:, first:last + 1] += eps
            return h

        def writer(key, positions):
            def fn(h):
                h = h.clone()
                for p in positions:
                    h[:, p] = clean[key][p]
                return h
            return fn

        with contextlib.ExitStack() as stack:
            stack.enter_context(edit_output(model, spec.embed, add_noise))
            for key, positions in restore.items():
                stack.enter_context(edit_output(model, names[key], writer(key, positions)))
            logits = model(input_ids=ids.expand(n_samples, -1)).logits[:, -1].float()
    return float(torch.softmax(logits, -1)[:, tid].mean())


def test_shapes_and_ranges(tiny):
    model, tok = tiny
    L = num_layers(model)
    r = trace_prompt(model, tok, TEMPLATE, SUBJECT, TARGET, n_samples=3)
    assert isinstance(r, TraceResult)
    n = len(tok(TEMPLATE.replace("{}", SUBJECT))["input_ids"])
    assert len(r.tokens) == n
    first, last = r.subject_range
    assert last == subject_last_index(tok, TEMPLATE, SUBJECT)
    assert 0 <= first <= last < n
    assert "".join(r.tokens[first:last + 1]).strip().startswith("Dan")
    assert set(r.scores) == {"block", "mlp", "attn"}
    for s in r.scores.values():
        assert s.shape == (n, L)
        assert np.isfinite(s).all()
        assert ((s >= 0) & (s <= 1)).all()
        np.testing.assert_array_equal(s[:first], r.low)  # nothing to restore before the subject
    assert 0 <= r.low <= 1 and 0 <= r.high <= 1
    assert r.target == TARGET and r.n_layers == L
    # a subset of positions leaves the others NaN
    r2 = trace_prompt(model, tok, TEMPLATE, SUBJECT, TARGET, kinds=("mlp",), n_samples=2, positions="subject_last")
    assert set(r2.scores) == {"mlp"}
    assert np.isfinite(r2.scores["mlp"][last]).all()
    assert np.isnan(np.delete(r2.scores["mlp"], last, axis=0)).all()


def test_restoring_last_block_everywhere_gives_clean_prob(tiny):
    model, tok = tiny
    L = num_layers(model)
    r = trace_prompt(model, tok, TEMPLATE, SUBJECT, TARGET, noise=NOISE, n_samples=4)
    n = len(r.tokens)
    assert abs(r.high - r.low) > 1e-6  # the noise does something
    every = reference_prob(model, tok, TEMPLATE, SUBJECT, TARGET, {("block", L - 1): list(range(n))},
                           NOISE, 4, 0)
    assert every == pytest.approx(r.high, abs=1e-5)
    # the last position's last block output alone determines the prediction
    assert r.scores["block"][n - 1, L - 1] == pytest.approx(r.high, abs=1e-5)


def test_zero_noise_scores_equal_clean_prob(tiny):
    model, tok = tiny
    r = trace_prompt(model, tok, TEMPLATE, SUBJECT, TARGET, noise=0.0, n_samples=2)
    assert r.low == pytest.approx(r.high, abs=1e-5)
    for s in r.scores.values():
        np.testing.assert_allclose(s, r.high, atol=1e-5)


@pytest.mark.parametrize("template", [TEMPLATE, START_TEMPLATE])
def test_batched_equals_slow_reference(tiny, template):
    model, tok = tiny
    L = num_layers(model)
    S = 3
    fast = trace_prompt(model, tok, template, SUBJECT, TARGET, noise=NOISE, n_samples=S, seed=5, batch_size=7)
    plain = trace_prompt(model, tok, template, SUBJECT, TARGET, noise=NOISE, n_samples=S, seed=5,
                         use_cache=False, skip_layers=False)
    for k in fast.scores:
        np.testing.assert_allclose(fast.scores[k], plain.scores[k], atol=1e-5)
    first, last = fast.subject_range
    n = len(fast.tokens)
    cells = [("block", first, 1), ("mlp", last, 0), ("attn", last, L - 1), ("mlp", n - 1, 2),
             ("block", min(last + 1, n - 1), L - 2)]
    if first > 0:
        cells.append(("attn", first - 1, 1))
    for kind, p, layer in cells:
        ref = reference_prob(model, tok, template, SUBJECT, TARGET, {(kind, layer): [p]}, NOISE, S, 5)
        assert fast.scores[kind][p, layer] == pytest.approx(ref, abs=1e-5), (kind, p, layer)
    assert fast.low == pytest.approx(reference_prob(model, tok, template, SUBJECT, TARGET, {}, NOISE, S, 5),
                                     abs=1e-5)


def test_window_matches_reference(tiny):
    model, tok = tiny
    L = num_layers(model)
    r = trace_prompt(model, tok, TEMPLATE, SUBJECT, TARGET, kinds=("mlp", "attn"), noise=NOISE, n_samples=2,
                     window=3, batch_size=5)
    last = r.subject_range[1]
    for kind, layer in [("mlp", 0), ("attn", 2), ("mlp", L - 1)]:
        layers = range(max(0, layer - 1), min(L, layer + 2))
        ref = reference_prob(model, tok, TEMPLATE, SUBJECT, TARGET, {(kind, j): [last] for j in layers},
                             NOISE, 2, 0)
        assert r.scores[kind][last, layer] == pytest.approx(ref, abs=1e-5)


def test_reproducible_with_seed(tiny):
    model, tok = tiny
    a = trace_prompt(model, tok, TEMPLATE, SUBJECT, TARGET, kinds=("mlp",), noise=NOISE, n_samples=2, seed=3)
    b = trace_prompt(model, tok, TEMPLATE, SUBJECT, TARGET, kinds=("mlp",), noise=NOISE, n_samples=2, seed=3)
    c = trace_prompt(model, tok, TEMPLATE, SUBJECT, TARGET, kinds=("mlp",), noise=NOISE, n_samples=2, seed=4)
    np.testing.assert_array_equal(a.scores["mlp"], b.scores["mlp"])
    assert a.low == b.low
    assert a.low != c.low


def test_no_hooks_left_behind(tiny):
    model, tok = tiny
    before = hook_count(model)
    trace_prompt(model, tok, TEMPLATE, SUBJECT, TARGET, n_samples=2)
    assert hook_count(model) == before == 0
    assert _patched_blocks(model) == []

    # fail inside a restoration pass that skips blocks: every tracing hook is registered then
    seen = {}

    def failing(h):
        patched = _patched_blocks(model)
        if patched:
            seen.update(patched=patched, hooks=hook_count(model))
            raise RuntimeError("boom")
        return h
    with pytest.raises(RuntimeError, match="boom"):
        with edit_output(model, spec_for(model).ln_f, failing):
            trace_prompt(model, tok, TEMPLATE, SUBJECT, TARGET, n_samples=2, batch_size=4)
    assert seen["patched"] and seen["hooks"] > 1
    assert hook_count(model) == 0
    assert _patched_blocks(model) == []
    # the model still works normally afterwards
    r = trace_prompt(model, tok, TEMPLATE, SUBJECT, TARGET, noise=0.0, n_samples=1, kinds=("block",))
    np.testing.assert_allclose(r.scores["block"], r.high, atol=1e-5)


def test_subject_not_in_prompt_raises(tiny):
    model, tok = tiny
    with pytest.raises(ValueError):
        trace_prompt(model, tok, "The mother tongue of Marie Curie is", SUBJECT, TARGET)
    with pytest.raises(ValueError):
        trace_prompt(model, tok, TEMPLATE, "", TARGET)
    # a filled prompt that contains the subject is accepted
    r = trace_prompt(model, tok, TEMPLATE.replace("{}", SUBJECT), SUBJECT, TARGET, kinds=("block",), n_samples=1,
                     positions="subject_last")
    assert r.subject_range == subject_range(tok, TEMPLATE, SUBJECT)
    assert hook_count(model) == 0


def test_trace_many_and_filter_known(tiny):
    model, tok = tiny
    L = num_layers(model)
    items = [(TEMPLATE, SUBJECT, TARGET), (START_TEMPLATE, "Miles Davis", "trumpet"),
             {"requested_rewrite": {"prompt": "{} is located in", "subject": "Eiffel Tower",
                                    "target_true": {"str": "Paris"}, "target_new": {"str": "Rome"}}}]
    assert filter_known(model, tok, items, top_k=len(tok) + 1) == items
    # the model's own argmax is "known"; an unlikely target at top_k=1 is not (random model)
    prompt = TEMPLATE.replace("{}", SUBJECT)
    ids = torch.tensor([tok(prompt)["input_ids"]])
    with torch.no_grad():
        top = int(model(input_ids=ids).logits[0, -1].argmax())
    mine = (TEMPLATE, SUBJECT, top)
    assert filter_known(model, tok, [mine], top_k=1) == [mine]
    assert filter_known(model, tok, items + [mine], top_k=len(tok) + 1, limit=2) == items[:2]
    # batched (right-padded) ranks equal one-prompt-at-a-time ranks from the full logits
    triples = [(TEMPLATE, SUBJECT, TARGET), (START_TEMPLATE, "Miles Davis", "trumpet"), mine,
               ("{} is located in the country of", "Eiffel Tower", "France")]
    expected = []
    for t, subj, y in triples:
        prompt = t.replace("{}", subj)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([tok(prompt)["input_ids"]])).logits[0, -1]
        tid = target_token_id(tok, prompt, y)
        expected.append(int((logits > logits[tid]).sum()))
    assert locate.known_ranks(model, tok, triples, batch_size=3) == expected

    s = trace_many(model, tok, items, noise=NOISE, n_samples=2)
    assert isinstance(s, TraceSummary)
    assert s.n_prompts == 3 and len(s.per_prompt) == 3 and s.layers == list(range(L))
    assert s.row_labels == ROW_LABELS
    for k in ("block", "mlp", "attn"):
        assert s.curves[k].shape == (L,)
        assert s.grid[k].shape == (6, L)
        expected = np.mean([r.indirect_effect(k)[r.subject_range[1]] for r in s.per_prompt], axis=0)
        np.testing.assert_allclose(s.curves[k], expected)
        np.testing.assert_allclose(s.grid[k][2], expected)  # "last subject token" row
        np.testing.assert_allclose(
            s.grid[k][5], np.mean([r.indirect_effect(k)[-1] for r in s.per_prompt], axis=0))
    # per-prompt seeds differ: seed + i
    assert [r.seed for r in s.per_prompt] == [0, 1, 2]
    assert hook_count(model) == 0


def _synthetic_summary(curve):
    curve = np.asarray(curve, dtype=float)
    L = curve.size
    return TraceSummary(kinds=("mlp",), layers=list(range(L)), curves={"mlp": curve},
                        grid={"mlp": np.zeros((6, L))}, row_labels=ROW_LABELS, n_prompts=1, per_prompt=[])


def test_propose_critical_layers_synthetic():
    curve = [0.0, 0.1, 0.05, 0.3, 0.4, 0.35, 0.2, 0.6, 0.0, 0.0, 0.0, 0.1]
    s = _synthetic_summary(curve)
    win = propose_critical_layers(s, kind="mlp", width=5)
    sums = [sum(curve[i:i + 5]) for i in range(len(curve) - 4)]
    best = int(np.argmax(sums))
    assert win == list(range(best, best + 5)) == [3, 4, 5, 6, 7]
    assert peak_layer(s) == 7
    assert propose_critical_layers(s, width=1) == [7]
    assert propose_critical_layers(np.array(curve), width=3) == [5, 6, 7]
    assert propose_critical_layers(curve, width=len(curve)) == list(range(len(curve)))
    with pytest.raises(ValueError):
        propose_critical_layers(s, width=len(curve) + 1)
    with pytest.raises(ValueError):
        propose_critical_layers(s, kind="attn")
    # excluding early layers
    spiky = [1.0, 0.0, 0.1, 0.2, 0.3, 0.1, 0.0, 0.0]
    assert propose_critical_layers(spiky, width=3) == [0, 1, 2]
    assert propose_critical_layers(spiky, width=3, min_layer=1) == [2, 3, 4]
    assert peak_layer(spiky) == 0 and peak_layer(spiky, min_layer=1) == 4
    with pytest.raises(ValueError):
        propose_critical_layers(spiky, width=8, min_layer=1)
    with pytest.raises(ValueError):
        peak_layer(spiky, min_layer=8)


def test_window_stability_on_hand_made_curves():
    import numpy as np

    from bluebook.locate import window_stability

    bump = np.zeros((20, 12))
    bump[:, 4:9] = [0.1, 0.2, 0.3, 0.2, 0.1]            # every prompt peaks at layer 6, window 4-8
    s = window_stability(bump, width=5, n_resamples=200)
    assert s["window_starts"] == {4: 1.0} and (s["peak_low"], s["peak_high"]) == (6, 6)
    split = bump.copy()
    split[10:] = 0
    split[10:, 0:5] = [0.1, 0.2, 0.3, 0.2, 0.1]         # half the prompts peak at layer 2 instead
    s = window_stability(split, width=5, n_resamples=400, seed=1)
    assert set(s["window_starts"]) <= {0, 1, 2, 3, 4} and max(s["window_starts"].values()) < 1.0
    assert s["peak_low"] <= 2 and s["peak_high"] >= 6
    with pytest.raises(ValueError, match="prompts, layers"):
        window_stability(np.zeros(5))
