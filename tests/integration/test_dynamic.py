"""BLUE with its second layer chosen per batch (``<base>_blue_dynamic``) on tiny random models."""
import json

import pytest
import torch

import bluebook
from bluebook import EditRequest
from bluebook.core.config import EditConfig, StatsConfig, TargetConfig
from bluebook.model.specs import proj_weight

REQS = [
    EditRequest("The capital of {} is", "France", "Rome", "Paris", case_id=0),
    EditRequest("{} plays the sport of", "Michael Jordan", "soccer", "basketball", case_id=1),
    EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", "French", case_id=2),
]
TEMPLATES = (("{}",), ("The day was long. {}",))
CRIT = [0, 1, 2, 3]


def _cfg(**kw):
    return EditConfig(layers=tuple(kw.pop("layers", CRIT)), lam=1e-2, alpha=1e-2,
                      target=TargetConfig(steps=kw.pop("steps", 6), lr=0.5),
                      stats=StatsConfig(n_samples=40, max_len=64), context_templates=TEMPLATES, **kw)


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("base", ["memit", "alphaedit"])
def test_dynamic_updates_two_layers_chosen_by_the_largest_gap_and_equals_blue_on_them(tiny, cache_dir, base):
    model, tok = tiny
    before = _weights(model)
    res = bluebook.edit(model, tok, REQS, f"{base}_blue_dynamic", hparams=_cfg(), progress=False)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())      # nothing applied
    ch = res.diagnostics["choice"]
    first, second = res.layers
    assert first == CRIT[0] and second in CRIT[1:] and ch["chosen"] == res.layers
    gaps = {l: c["gap"] for l, c in ch["candidates"].items()}
    assert sorted(gaps) == CRIT[1:]                                       # every later layer was measured
    best = max(gaps.values())                                            # ... and the largest gap taken,
    assert second == max(l for l in gaps if gaps[l] >= best - 1e-6 * max(1, best))   # ties to the deepest
    assert sorted(res.deltas) == res.layers and res.changed_layers() == res.layers
    assert res.diagnostics["timings"]["choice"] >= 0
    # the choice only picks the layers: the edit is fixed BLUE's with those two as its boundary
    blue = bluebook.edit(model, tok, REQS, f"{base}_blue", hparams=_cfg(blue_layers=(first, second)),
                         progress=False)
    assert blue.layers == res.layers
    for l in res.layers:
        torch.testing.assert_close(res.deltas[l], blue.deltas[l], rtol=1e-5, atol=1e-7)
    # applied, exactly two layers' weights change
    with res:
        changed = [l for l in range(4) if not torch.equal(proj_weight(model, l), before[_proj_name(model, l)])]
    assert changed == res.layers
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def _proj_name(model, l):
    from bluebook.model.specs import spec_for
    return spec_for(model).proj_name(l) + ".weight"


def test_dynamic_sequential_alphaedit_protects_earlier_edits_at_every_candidate_layer(cache_dir):
    """C_p grows at every layer the rule may update, so a later batch that picks a layer the earlier
    ones did not still keeps their keys' outputs."""
    model, tok = bluebook.tiny_model("tiny-gpt2")
    state = None
    for chunk in (REQS[:2], REQS[2:]):
        res = bluebook.edit(model, tok, chunk, "alphaedit_blue_dynamic", hparams=_cfg(), state=state,
                            apply=True, progress=False)
        state = res.state
    assert sorted(state.C_p) == CRIT
    n_keys = {l: float(torch.trace(state.C_p[l])) > 0 for l in CRIT}
    assert all(n_keys.values())


def test_dynamic_refuses_a_window_of_one_layer(cache_dir):
    model, tok = bluebook.tiny_model("tiny-llama")
    before = _weights(model)
    with pytest.raises(ValueError, match="two critical layers"):
        bluebook.edit(model, tok, REQS[:1], "memit_blue_dynamic", hparams=_cfg(layers=[1]), progress=False)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_replicate_records_the_chosen_layers_per_batch(tmp_path, cache_dir):
    import bluebook.experiments.replicate as rep
    from bluebook.experiments.verdicts import blue_vs_base

    model, tok = bluebook.tiny_model("tiny-llama")
    hp = {"layers": [0, 1, 2], "target": {"steps": 3}, "stats": {"n_samples": 40, "max_len": 64},
          "context_templates": [["{}"]]}
    reqs = bluebook.load_counterfact(n=4)
    res = rep.replicate((model, tok), "counterfact", methods=["memit", "memit_blue", "memit_blue_dynamic"], n=4,
                        batch=2, out=tmp_path / "o", hparams=hp, progress=False, requests=reqs)
    prog = json.loads((tmp_path / "o" / "memit_blue_dynamic" / "progress.json").read_text())
    assert len(prog["batches"]) == 2
    for b in prog["batches"]:
        assert len(b["layers"]) == 2 and b["layers"][0] == 0 and b["layers"][1] in (1, 2)
    assert set(prog["edited_layers"]) == {l for b in prog["batches"] for l in b["layers"]}
    assert "memit_blue_dynamic" in res["methods"]
    # the paper's BLUE-vs-base claims pair memit_blue with memit only, never the dynamic variant
    cols = {m: {"efficacy": [1.0, 0.0], "case_id": [0, 1]} for m in ("memit", "memit_blue", "memit_blue_dynamic")}
    assert list(blue_vs_base(cols, "counterfact", metrics=("efficacy",))) == ["counterfact:memit_blue>memit:efficacy"]


def test_a_middle_layer_choice_reuses_its_probe_target_exactly(cache_dir):
    """The loop keeps the target it optimised while choosing: a rule that picks the *smallest* gap
    (a middle layer here) gives fixed BLUE's edit on that pair of layers."""
    from dataclasses import dataclass

    from bluebook.core.distribute import Dynamic

    @dataclass(frozen=True)
    class SmallestGap(Dynamic):
        def choose(self, i, chosen, layers, gap):
            if i != 1:
                return super().choose(i, chosen, layers, gap)
            later = [l for l in layers if l > chosen[0]]
            gaps = {l: gap(l) for l in later}
            return min(later, key=gaps.get)

    model, tok = bluebook.tiny_model("tiny-gpt2")
    res = bluebook.edit(model, tok, REQS, "memit_blue_dynamic", hparams=_cfg(), distribution=SmallestGap(),
                        progress=False)
    first, second = res.layers
    assert first == 0 and second == 1, res.diagnostics["choice"]       # gaps rise with depth on this model
    blue = bluebook.edit(model, tok, REQS, "memit_blue", hparams=_cfg(blue_layers=(first, second)), progress=False)
    for l in res.layers:
        torch.testing.assert_close(res.deltas[l], blue.deltas[l], rtol=1e-5, atol=1e-7)
    assert res.targets[1].steps == blue.targets[1].steps
    # the probes not used are the choice's extra cost
    t = res.diagnostics["timings"]
    assert t["choice"] == pytest.approx(sum(c["seconds"] for l, c in res.diagnostics["choice"]["candidates"].items()
                                            if l != second))


def test_undo_of_a_dynamic_alphaedit_batch_restores_the_state_at_every_candidate_layer(cache_dir):
    model, tok = bluebook.tiny_model("tiny-llama")
    first = bluebook.edit(model, tok, REQS[:2], "alphaedit_blue_dynamic", hparams=_cfg(), apply=True, progress=False)
    state = first.state
    before_cp = {l: t.clone() for l, t in state.C_p.items()}
    weights = _weights(model)
    second = bluebook.edit(model, tok, REQS[2:], "alphaedit_blue_dynamic", hparams=_cfg(), state=state,
                           apply=True, progress=False)
    assert any(not torch.equal(state.C_p[l], before_cp[l]) for l in CRIT if l not in second.layers)
    second.undo()
    assert sorted(state.C_p) == sorted(before_cp)
    assert all(torch.equal(state.C_p[l], before_cp[l]) for l in CRIT)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
    assert state.n_batches == 1
