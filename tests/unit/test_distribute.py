"""The residual-distribution strategies, on hand-computed cases and their defining properties."""
import pytest
import torch

from bluebook.core.distribute import Boundary, Direct, Distribution, Even, SingleLayer

LAYERS = [3, 4, 5, 6]


@pytest.mark.parametrize("rule", [Even(), Boundary(), Direct(), SingleLayer(layer=4),
                                  SingleLayer(layer=4, direct=True)])
def test_every_strategy_is_a_distribution(rule):
    assert isinstance(rule, Distribution)
    plan = rule.plan(LAYERS)
    assert plan == sorted(plan) and set(plan) <= set(LAYERS)       # updated in depth order, critical only


def test_even_hand_case():
    r = Even()
    assert r.plan(LAYERS) == LAYERS
    assert [r.target_layer(i, LAYERS, LAYERS) for i in range(4)] == [6, None, None, None]   # one v*, at L
    assert [r.measure_layer(i, LAYERS, LAYERS) for i in range(4)] == [6, 6, 6, 6]
    diff = torch.tensor([[8.0, -4.0], [2.0, 12.0]])
    for i, share in enumerate([4, 3, 2, 1]):                       # layer l_i takes (Z - h^L) / (N_L - i)
        assert torch.equal(r.residual(diff, i, LAYERS, LAYERS), diff / share)


def test_even_shares_add_up_to_the_residual_when_each_is_realised():
    """With h^L moving by exactly the share each layer was solved for, the N shares are equal and sum
    to the initial residual (MEMIT's spreading rule)."""
    r, remaining = Even(), torch.tensor([[3.0], [-6.0]])
    total, shares = torch.zeros_like(remaining), []
    first = remaining.clone()
    for i in range(len(LAYERS)):
        s = r.residual(remaining, i, LAYERS, LAYERS)
        shares.append(s)
        total += s
        remaining = remaining - s
    assert torch.allclose(total, first) and torch.allclose(remaining, torch.zeros_like(first))
    assert all(torch.allclose(s, first / len(LAYERS)) for s in shares)


def test_boundary_hand_case_and_refusal():
    r = Boundary()
    plan = r.plan(LAYERS)
    assert plan == [3, 6]
    assert [r.target_layer(i, plan, LAYERS) for i in range(2)] == [3, 6]    # a fresh v* at each layer
    assert [r.measure_layer(i, plan, LAYERS) for i in range(2)] == [3, 6]
    diff = torch.randn(5, 2)
    assert torch.equal(r.residual(diff, 1, plan, LAYERS), diff)             # the full, direct residual
    with pytest.raises(ValueError, match="at least two critical layers"):
        r.plan([5])


def test_direct_updates_every_layer_with_its_own_target():
    r = Direct()
    assert r.plan(LAYERS) == LAYERS
    assert [r.target_layer(i, LAYERS, LAYERS) for i in range(4)] == LAYERS
    diff = torch.randn(3, 1)
    assert torch.equal(r.residual(diff, 2, LAYERS, LAYERS), diff)


def test_single_layer_distributed_versus_direct():
    dist, direct = SingleLayer(layer=4), SingleLayer(layer=4, direct=True)
    diff = torch.ones(2, 1) * 6.0
    assert dist.plan(LAYERS) == [4] == direct.plan(LAYERS)
    assert dist.target_layer(0, [4], LAYERS) == 6 and direct.target_layer(0, [4], LAYERS) == 4
    assert torch.equal(dist.residual(diff, 0, [4], LAYERS), diff / 3)        # its MEMIT share: N_L - index(4) = 3
    assert torch.equal(direct.residual(diff, 0, [4], LAYERS), diff)
    with pytest.raises(ValueError, match="single layer 9 is not among"):
        SingleLayer(layer=9).plan(LAYERS)


def test_dynamic_keeps_the_first_layer_and_takes_the_largest_gap_after_it():
    from bluebook.core.distribute import Dynamic

    r, asked = Dynamic(), []
    gaps = {4: 0.3, 5: 0.9, 6: 0.1}

    def gap(l):
        asked.append(l)
        return gaps[l]

    assert isinstance(r, Distribution) and r.plan(LAYERS) == LAYERS      # every layer may be updated
    assert r.choose(0, [], LAYERS, gap) == 3 and asked == []              # the first needs no measurement
    assert r.choose(1, [3], LAYERS, gap) == 5 and asked == [4, 5, 6]      # only the later layers are probed
    assert r.choose(2, [3, 5], LAYERS, gap) is None                       # two layers, as BLUE
    # ties, and nothing left to do anywhere, go to the deepest layer: fixed BLUE
    assert r.choose(1, [3], LAYERS, lambda l: 0.0) == 6
    assert r.choose(1, [3], LAYERS, lambda l: {4: 0.5, 5: 0.5, 6: 0.2}[l]) == 5
    assert r.choose(1, [3], LAYERS, lambda l: {4: 0.75, 5: 0.2, 6: 0.75 - 1e-9}[l]) == 6   # equal up to round-off
    # it updates with its own layer's full residual, measured there (BLUE's rule)
    diff = torch.tensor([[1.0, -2.0]])
    assert r.target_layer(1, [3, 5], LAYERS) == 5 and r.measure_layer(1, [3, 5], LAYERS) == 5
    assert torch.equal(r.residual(diff, 1, [3, 5], LAYERS), diff)
    with pytest.raises(ValueError, match="two critical layers"):
        r.plan([3])
    with pytest.raises(ValueError, match="criterion"):
        Dynamic(criterion="smallest")


def test_method_names_read_the_dynamic_variants():
    from bluebook.core.methods import parse_method
    from bluebook.core.names import DYNAMIC_METHODS, METHODS, is_blue_pair, read_method, split_method

    assert DYNAMIC_METHODS == tuple(f"{b}_blue_dynamic" for b in ("memit", "memit_seq", "alphaedit", "rect", "prune"))
    assert not set(DYNAMIC_METHODS) & set(METHODS)                         # the paper's eight stay as they were
    assert read_method("AlphaEdit-BLUE-dynamic") == ("alphaedit_blue_dynamic", "alphaedit", "dynamic")
    assert read_method("memit_seq_blue") == ("memit_seq_blue", "memit_seq", "boundary")
    assert split_method("prune_blue_dynamic") == ("prune_blue_dynamic", "prune", True)
    assert is_blue_pair("memit_blue", "memit") and not is_blue_pair("memit_blue_dynamic", "memit")
    m = parse_method("memit_blue_dynamic")
    assert m.blue and m.base == "memit" and m.distribution.name == "dynamic"
    for bad in ("memit_dynamic", "blue_dynamic", "rome_blue_dynamic"):
        with pytest.raises(ValueError, match="unknown method"):
            read_method(bad)
