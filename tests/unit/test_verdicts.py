"""BLUE-vs-base claims from per-record columns (hand-made columns whose answer is known) and from
the committed recorded run."""
from pathlib import Path

import pytest

from bluebook.experiments import verdicts
from bluebook.experiments.paper import paper_difference
from bluebook.metrics.claims import check_claims, claim

ROOT = Path(__file__).resolve().parents[2]


def test_paper_difference_reads_the_tables():
    # Llama3-8B CounterFact efficacy: MEMIT-BLUE 99.57, MEMIT 65.65 (paper Table 1)
    assert paper_difference("counterfact", "memit", "efficacy").startswith("+33.92 (Llama3-8B)")
    assert paper_difference("counterfact", "rect", "efficacy") == "not reported"


def test_blue_vs_base_pairs_records_and_skips_unpaired_rows():
    ids = list(range(60))
    cols = {"memit": {"case_id": ids, "efficacy": [0] * 60, "specificity": [0.5] * 60},
            "memit_blue": {"case_id": ids, "efficacy": [1] * 60, "specificity": [0.5] * 60},
            "alphaedit": {"case_id": ids, "efficacy": [1] * 60},
            "unedited": {"case_id": ids, "efficacy": [0] * 60}}
    got = verdicts.blue_vs_base(cols, "counterfact")
    check_claims(got)
    assert set(got) == {"counterfact:memit_blue>memit:efficacy", "counterfact:memit_blue>memit:specificity"}
    eff = got["counterfact:memit_blue>memit:efficacy"]
    assert eff["ours"] == pytest.approx(100.0) and eff["verdict"] == "agrees" and eff["n"] == 60
    assert got["counterfact:memit_blue>memit:specificity"]["verdict"] == "inconclusive"   # a tie: interval [0, 0]
    bad = dict(cols, memit_blue=dict(cols["memit_blue"], case_id=ids[::-1]))
    with pytest.raises(ValueError, match="different records"):
        verdicts.blue_vs_base(bad, "counterfact")


def test_recorded_claims_from_the_committed_run_say_how_far_it_got():
    from bluebook.experiments.curves import load_run

    folder = ROOT / "results" / "sequential" / "counterfact_n1000_b100"
    run = load_run(folder)
    got = verdicts.recorded_blue_vs_base(run)
    check_claims(got)
    assert {c["evidence"] for c in got.values()} == {"recorded"}
    for name, c in got.items():
        if c["ours"] is None:                       # the pair has no common point yet
            assert c["verdict"] == "inconclusive" and "no evaluation point" in c["note"], name
        elif c["interval"] is not None:
            assert c["interval"][0] <= c["ours"] <= c["interval"][1], name
        else:                                       # unpaired ability intervals: the note gives both
            assert "unpaired" in c["note"], name


def test_recorded_ability_claims_pair_texts_and_facts_when_kept(tmp_path):
    from types import SimpleNamespace

    from bluebook.experiments.verdicts import _ability_claims

    run = SimpleNamespace(folder=tmp_path / "cf_run", dataset="counterfact")
    base_nll, blue_nll = [2.0 + 0.01 * i for i in range(60)], [1.9 + 0.01 * i for i in range(60)]   # 0.1 lower
    ids = list(range(40))
    ab_base = {"perplexity": {"value": 8.0, "low": 7.0, "high": 9.0, "n_texts": 60, "text_mean_nll": base_nll},
               "known_facts": {"value": 0.5, "low": 0.35, "high": 0.65, "n": 40, "case_ids": ids, "hits": [1, 0] * 20}}
    ab_blue = {"perplexity": {"value": 7.5, "low": 6.6, "high": 8.5, "n_texts": 60, "text_mean_nll": blue_nll},
               "known_facts": {"value": 0.75, "low": 0.6, "high": 0.86, "n": 40, "case_ids": ids,
                               "hits": [1, 1, 1, 0] * 10}}
    got = _ability_claims(run, "memit", 500, ab_blue, ab_base)
    ppl = got["counterfact:memit_blue>memit:perplexity"]
    assert ppl["ours"] == pytest.approx(-0.1) and ppl["verdict"] == "agrees" and ppl["n"] == 60   # paired: decisive
    kf = got["counterfact:memit_blue>memit:known_facts"]
    assert kf["ours"] == pytest.approx(25.0) and kf["n"] == 40 and "paired over facts" in kf["note"]
    # without per-item values: the unpaired rule, which these overlapping intervals cannot decide
    strip = {k: {x: v for x, v in d.items() if x not in ("text_mean_nll", "hits")} for k, d in ab_blue.items()}
    strip_base = {k: {x: v for x, v in d.items() if x not in ("text_mean_nll", "hits")} for k, d in ab_base.items()}
    unpaired = _ability_claims(run, "memit", 500, strip, strip_base)
    assert unpaired["counterfact:memit_blue>memit:perplexity"]["verdict"] == "inconclusive"
    assert "unpaired" in unpaired["counterfact:memit_blue>memit:known_facts"]["note"]


def test_budget_hparams_equal_total_per_request():
    hp = verdicts.budget_hparams(["memit", "memit_blue", "alphaedit_blue"], 25, overrides={"lam": 5.0})
    assert hp["memit"] == {"lam": 5.0, "target": {"steps": 50}}            # one optimisation: the whole budget
    assert hp["memit_blue"]["target"]["steps"] == hp["alphaedit_blue"]["target"]["steps"] == 25   # two of 25
    same = verdicts.budget_hparams(["memit", "memit_blue"], 25, rule="same_cap")
    assert same["memit"]["target"]["steps"] == same["memit_blue"]["target"]["steps"] == 25
    with pytest.raises(ValueError, match="rule must be one of"):
        verdicts.budget_hparams(["memit"], 25, rule="fair")


def test_budget_note_reads_caps_and_steps_from_the_run_files(tmp_path):
    """Hand case: memit capped at 25 with steps 25, 20 (one at the cap); BLUE capped at 25 per
    optimisation with (25, 2) and (10, 0) per request: 27 and 10, mean 18.5, one of four at the cap."""
    import json

    from bluebook.experiments.verdicts import budget_note, run_caps

    def write(m, cap, steps):
        (tmp_path / m).mkdir()
        (tmp_path / m / "progress.json").write_text(json.dumps({
            "config": {"resolved_config": {"target": {"steps": cap}}},
            "batches": [{"target_steps": steps}]}))

    write("memit", 25, {"8": [25, 20]})
    write("memit_blue", 25, {"4": [25, 10], "8": [2, 0]})
    assert run_caps(tmp_path, ["memit", "memit_blue", "absent"]) == {"memit": 25, "memit_blue": 25}
    note = budget_note(tmp_path, "memit", "memit_blue")
    assert note.startswith("v* budget: same cap per optimisation (caps memit_blue 25, memit 25)")
    assert "steps per request memit_blue 18.5, memit 22.5" in note and "at the cap 25 % / 50 %" in note
    assert budget_note(tmp_path, "alphaedit", "alphaedit_blue") == ""          # nothing recorded: no note


def test_largest_sample_keeps_the_claim_measured_on_the_most_records():
    long_unmeasured = {"q1": claim("p", None, None, None, "inconclusive", "recorded", "not reached yet"),
                       "q2": claim("p", 1.0, [0.5, 1.5], 500, "agrees", "recorded", "long run"),
                       "q3": claim("p", -2.0, [-3.0, -1.0], 200, "disagrees", "recorded", "long run")}
    short = {"q1": claim("p", -1.0, [-2.0, 0.5], 200, "inconclusive", "recorded", "short run"),
             "q2": claim("p", 3.0, [2.0, 4.0], 200, "agrees", "recorded", "short run"),
             "q3": claim("p", 0.0, [-1.0, 1.0], 200, "inconclusive", "recorded", "short run"),
             "q4": claim("p", None, None, None, "inconclusive", "recorded", "short, not reached")}
    got = verdicts.largest_sample(long_unmeasured, short)
    assert got["q1"]["note"] == "short run"        # measured beats not measured
    assert got["q2"]["note"] == "long run"         # 500 records beat 200
    assert got["q3"]["note"] == "long run"         # a tie keeps the earlier set
    assert got["q4"]["ours"] is None               # only one set has it
    assert verdicts.largest_sample(short, long_unmeasured)["q2"]["note"] == "long run"   # order does not matter for n
