"""Length grouping of sequences for padded batches (targets' suffix groups, prefix passes, keys)."""
from hypothesis import given
from hypothesis import strategies as st

from bluebook.model.tokens import length_groups


@given(st.lists(st.integers(1, 60), min_size=1, max_size=200))
def test_groups_partition_rows_into_sorted_runs(lengths):
    groups = length_groups(lengths)
    flat = [r for g in groups for r in g]
    assert sorted(flat) == list(range(len(lengths)))               # every row exactly once
    assert all(g for g in groups)
    runs = [(min(lengths[r] for r in g), max(lengths[r] for r in g)) for g in groups]
    assert all(a[1] <= b[0] for a, b in zip(runs, runs[1:]))        # contiguous in length order
    # never worse than one padded batch of everything, in padded positions plus per-pass overhead
    padded = sum(len(g) * max(lengths[r] for r in g) for g in groups)
    assert padded <= len(lengths) * max(lengths)


def test_very_different_lengths_are_not_padded_together():
    lengths = [2] * 100 + [50] * 100
    groups = length_groups(lengths)
    assert len(groups) == 2 and {len(g) for g in groups} == {100}


def test_equal_lengths_form_one_group():
    assert length_groups([7] * 30) == [list(range(30))]
