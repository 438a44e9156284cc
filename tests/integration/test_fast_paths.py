"""The fast v* engine is an exact alternative to the plain loop.

In float64 every difference between the two is floating-point reassociation (batched matrix
products, a cached prefix, skipped blocks, index_add instead of a Python mean), so targets agree to
round-off (~1e-12 relative); in float32 (the embedded model) the same reassociation is ~1e-7 per
step, and Adam's first steps move every coordinate by ±lr whatever the gradient's size, so a
near-zero gradient coordinate can flip sign: the step counts must be identical and z close.
"""
import pytest
import torch

import bluebook
from bluebook import EditRequest
from bluebook.core.config import TargetConfig, with_overrides
from bluebook.core.targets import optimize_target_plain
from bluebook.editor.targets import optimize_targets

REQS = [
    EditRequest("The capital of {} is", "France", "Rome", "Paris", case_id=0),
    EditRequest("{} plays the sport of", "Michael Jordan", "soccer", "basketball", case_id=1),
    EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", "French", case_id=2),
]
TEMPLATES = (("{}",), ("The day was long. {}", "Because I said so and then left. {}"))


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("kind", ["tiny-gpt2", "tiny-gptj", "tiny-llama"])
def test_fast_engine_equals_plain_loop_in_float64(kind):
    model, tok = bluebook.tiny_model(kind)
    model = model.double()
    cfg = TargetConfig(steps=8, lr=0.5, early_stop=-1.0)          # every request runs all 8 steps
    fast = optimize_targets(model, tok, REQS, 1, cfg, TEMPLATES, progress=False)
    plain = optimize_targets(model, tok, REQS, 1, with_overrides_target(cfg, engine="plain"), TEMPLATES,
                             progress=False)
    assert fast.z.dtype == torch.float64 and plain.z.dtype == torch.float64
    assert fast.steps == plain.steps == [8, 8, 8]
    assert _rel(fast.delta, plain.delta) < 1e-10
    assert _rel(fast.z, plain.z) < 1e-12
    for a, b in zip(fast.loss, plain.loss):
        assert a == pytest.approx(b, rel=1e-10, abs=1e-12)
    assert float(plain.delta.norm()) > 0                          # the optimisation did move


@pytest.mark.parametrize("kind", ["tiny-gpt2", "tiny-llama"])
def test_fast_engine_equals_plain_loop_with_early_stops_in_float64(kind):
    """Requests stop at different iterations (regrouping the fast engine's suffixes) and still match."""
    model, tok = bluebook.tiny_model(kind)
    model = model.double()
    free = TargetConfig(steps=6, lr=0.5, weight_decay=0.0, clamp_norm_factor=100.0, early_stop=-1.0)
    losses = sorted(x for t in optimize_targets(model, tok, REQS, 1, free, TEMPLATES, progress=False).loss for x in t)
    gaps = [(losses[i + 1] - losses[i], i) for i in range(len(losses) // 4, 3 * len(losses) // 4)]
    _, i = max(gaps)
    cfg = TargetConfig(steps=6, lr=0.5, weight_decay=0.0, clamp_norm_factor=100.0,
                       early_stop=(losses[i] + losses[i + 1]) / 2)
    fast = optimize_targets(model, tok, REQS, 1, cfg, TEMPLATES, progress=False)
    plain = [optimize_target_plain(model, tok, r, 1, cfg, TEMPLATES) for r in REQS]
    assert len(set(fast.steps)) >= 2, "the threshold should stop requests at different iterations"
    for j, p in enumerate(plain):
        assert fast.steps[j] == p.steps[0]
        assert _rel(fast.z[j], p.z[0]) < 1e-12


def test_engine_is_validated():
    model, tok = bluebook.tiny_model("tiny-gpt2")
    with pytest.raises(ValueError, match="engine"):
        optimize_targets(model, tok, REQS[:1], 1, TargetConfig(engine="turbo"), TEMPLATES, progress=False)


def test_edit_with_plain_engine_equals_fast_engine_in_float64(cache_dir):
    """Through the whole edit (MEMIT-BLUE: two fresh v* runs), the engine choice changes nothing."""
    model, tok = bluebook.tiny_model("tiny-llama")
    model = model.double()
    base = {"layers": [0, 1, 2], "lam": 1.0, "target": {"steps": 5, "lr": 0.5},
            "stats": {"n_samples": 8, "max_len": 32, "dtype": "float64"}}
    state = bluebook.SequentialState()
    fast = bluebook.edit(model, tok, REQS, "memit_blue", hparams=base, templates=TEMPLATES, state=state,
                         progress=False)
    plain_hp = dict(base, target=dict(base["target"], engine="plain"))
    plain = bluebook.edit(model, tok, REQS, "memit_blue", hparams=plain_hp, templates=TEMPLATES,
                          state=bluebook.SequentialState(stats=dict(state.stats)), progress=False)
    assert fast.layers == plain.layers == [0, 2]
    for l in fast.layers:
        assert _rel(fast.deltas[l], plain.deltas[l]) < 1e-9


def with_overrides_target(cfg: TargetConfig, **kw) -> TargetConfig:
    return with_overrides(bluebook.EditConfig(target=cfg), target=kw).target


@pytest.mark.model
def test_fast_engine_equals_plain_loop_on_smollm2(smollm2):
    """float32 on the embedded model: identical step counts; z within 1e-3 relative.

    Measured: ‖Δz‖/‖z‖ ≈ 1e-6–1e-5 over 25 steps for these requests; the bound leaves room for the
    sign flips of Adam's ±lr first steps on near-zero gradient coordinates (observed up to 4e-3 for
    lr 0.5 on other requests, but then on ‖Δδ‖/‖δ‖, which is what the second check bounds loosely)."""
    model, tok = smollm2
    reqs = bluebook.load_counterfact(n=2)
    cfg = bluebook.preset_for(model, "memit").target
    templates = (("{}",), ("The day was long. {}",))
    fast = optimize_targets(model, tok, reqs, 4, cfg, templates, progress=False)
    for j, r in enumerate(reqs):
        p = optimize_target_plain(model, tok, r, 4, cfg, templates)
        assert fast.steps[j] == p.steps[0]
        assert _rel(fast.z[j], p.z[0]) < 1e-3
        assert _rel(fast.delta[j], p.delta[0]) < 2e-2
