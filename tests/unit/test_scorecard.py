"""The scorecard: one verdict per claim from the strongest fair evidence, the rest as context; claims
that could not be measured said so; conflicting verdicts between notebooks caught."""
from __future__ import annotations

from pathlib import Path

import pytest

from bluebook.experiments import scorecard as sc
from bluebook.metrics.claims import claim

KEY = "counterfact:memit_blue>memit:efficacy"
RESULTS = Path(__file__).resolve().parents[2] / "results" / "sequential"


def c(verdict, ours, n, evidence="recorded", note=""):
    return claim("BLUE beats MEMIT", ours, [ours - 1, ours + 1], n, verdict, evidence, note, quantity="difference")


def index(**by_notebook):
    return {stem: {"metrics": {"claims": claims}} for stem, claims in by_notebook.items()}


def test_conflicting_verdicts_between_notebooks_are_caught():
    """The hand-made conflict of the issue: one claim, three notebooks, two verdicts."""
    idx = index(**{
        "06_blue": {KEY: c("agrees", 3.2, 1000, note="v* budget: same cap per optimisation")},
        "07_replication": {KEY: c("inconclusive", 0.6, 500, note="v* budget: equal total per request")},
        "09_sequential_curves": {KEY: c("agrees", 3.2, 1000, note="v* budget: same cap per optimisation"),
                                 KEY + "_equal_total": c("inconclusive", 0.6, 500)},
    })
    got = sc.conflicts(idx)
    assert got == {KEY: {"06_blue": "agrees", "07_replication": "inconclusive", "09_sequential_curves": "inconclusive"}}
    # the scorecard keeps one row for it: the equal-total measurement decides, the others are context
    rows = sc.scorecard(idx)
    assert [r.key for r in rows] == [KEY]
    assert rows[0].verdict == "inconclusive" and rows[0].chosen.budget == sc.EQUAL_TOTAL
    assert len(rows[0].context) == 3
    # settled against one pool, every notebook gives the same verdict
    pool = sc.measurements(idx)
    settled = index(**{stem: sc.settle(info["metrics"]["claims"], pool) for stem, info in idx.items()})
    assert sc.conflicts(settled) == {}


def test_no_conflict_when_notebooks_agree():
    idx = index(a={KEY: c("agrees", 3.0, 100)}, b={KEY: c("agrees", 2.0, 50)})
    assert sc.conflicts(idx) == {}


@pytest.mark.parametrize("stronger, weaker", [
    # a small live sample never outranks a larger measurement, whatever its budget
    (c("inconclusive", 0.5, 100, "recorded", "same cap"), c("agrees", 3.0, 8, "live", "equal total")),
    # an equal total budget outranks another rule, even on fewer records
    (c("inconclusive", 0.6, 500, note="equal total"), c("agrees", 3.2, 1000, note="same cap")),
    # at the same budget, more records win
    (c("agrees", 1.0, 500, note="equal total"), c("inconclusive", 1.0, 400, note="equal total")),
    # at the same size, recorded over live
    (c("agrees", 1.0, 100, "recorded"), c("inconclusive", 1.0, 100, "live")),
])
def test_the_strongest_fair_evidence_decides(stronger, weaker):
    for order in ((stronger, weaker), (weaker, stronger)):
        ms = [sc.Measurement(KEY, f"n{i}", x, sc.budget_of(KEY, x)) for i, x in enumerate(order)]
        row = sc.choose(ms)
        assert row.chosen.claim is stronger and [m.claim for m in row.context] == [weaker]
        assert row.verdict == stronger["verdict"]


def test_a_claim_with_every_value_zero_on_a_tiny_sample_is_not_measured():
    zero = claim("RECT-BLUE steps fall", 0.0, [0.0, 0.0], 4, "inconclusive", "live")
    assert sc.not_measured(zero)
    assert sc.choose([sc.Measurement("rect_steps", "06", zero, None)]).verdict == sc.NOT_MEASURED
    assert not sc.not_measured(claim("x", 0.0, [-0.1, 0.1], 4, "inconclusive", "live"))
    assert not sc.not_measured(claim("x", 0.0, [0.0, 0.0], 500, "inconclusive", "recorded"))


def test_differences_are_labelled_and_notes_fit_on_one_line():
    d = claim("cosine falls with distance", -0.339, [-0.4, -0.3], 50, "agrees", "live", quantity="difference")
    assert sc.ours(d) == "Δ -0.339"
    assert sc.ours(claim("x", 0.97, [0.9, 1.0], 50, "agrees", "live")) == "0.970"
    long = "recorded run counterfact_n1000_b100: paired ×100; v* budget: same cap; " + "word " * 60
    short = sc.short_note(long)
    assert len(short) <= sc.NOTE_WIDTH and "counterfact_n1000_b100" not in short
    assert sc.provenance(long) == "counterfact_n1000_b100"


def test_report_has_one_row_per_claim_grouped_in_the_papers_order():
    other = "04_residual_distribution"
    idx = index(**{
        other: {"direct_beats_distributed": claim("direct ≈ 1", 0.97, [0.95, 0.99], 50, "agrees", "recorded",
                                                  "recorded: full profile, 2026-12-01, commit abc; 50 requests")},
        "06_blue": {KEY: c("agrees", 3.2, 1000, note="recorded run counterfact_n1000_b100: x; v* budget: same cap")},
        "09_sequential_curves": {KEY: c("agrees", 3.2, 1000, note="recorded run counterfact_n1000_b100: x; same cap"),
                                 KEY + "_equal_total": c("inconclusive", 0.6, 500,
                                                         note="recorded run counterfact_n1000_b100_equal_total: y")},
    })
    lines = sc.report_lines(idx)
    assert lines[0].startswith("2 distinct claims, one verdict each: 1 agrees, 0 disagrees, 1 inconclusive")
    table_rows = [ln for ln in lines if ln.startswith("| `")]
    assert sum(f"`{KEY}`" in ln for ln in table_rows) == 1      # inconclusive: in its group's table only
    assert sum("`direct_beats_distributed`" in ln for ln in table_rows) == 2     # decided: headline and group
    assert lines.index("## Why distribution fails") < lines.index("## Sequential editing outcome")
    sources = lines[lines.index("## Sources"):]
    assert sum("counterfact_n1000_b100_equal_total" in ln for ln in sources) == 1
    assert sum("full profile, 2026-12-01, commit abc" in ln for ln in sources) == 1


def test_recorded_pool_keeps_both_budget_rules_and_decides_by_equal_total():
    pool = sc.recorded_pool(RESULTS)
    ms = pool[KEY]
    assert {m.budget for m in ms} == {sc.EQUAL_TOTAL, sc.SAME_CAP}
    row = sc.choose(ms)
    assert row.chosen.budget == sc.EQUAL_TOTAL
    assert all(m.budget == sc.SAME_CAP for m in row.context)
