"""The recorded BLUE-versus-base comparison at an equal total v* budget, made from a run of the base
methods alone beside a same-cap run's BLUE columns (``curves.equal_total_run``): it must give the
claims a self-contained equal-total run gives, and refuse a column that was computed differently."""
import dataclasses
import json
import shutil

import pytest

import bluebook
import bluebook.experiments.replicate as rep
from bluebook.experiments import curves, verdicts
from bluebook.model.loading import tiny_model

BASE_HP = {"stats": {"n_samples": 40, "max_len": 64}, "context_templates": [["{}"]]}
N, BATCH, STEPS = 4, 2, 2


def _replicate(model_tok, reqs, out, methods, rule):
    hp = verdicts.budget_hparams(methods, STEPS, rule, overrides=BASE_HP)
    return rep.replicate(model_tok, "counterfact", methods=methods, n=N, batch=BATCH, out=out, hparams=hp,
                         progress=False, requests=reqs, eval_every=2)


def _values(claims):
    return {k: (c["ours"], c["interval"], c["n"], c["verdict"]) for k, c in claims.items()}


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("equal_total")
    mp = pytest.MonkeyPatch()
    mp.setenv("BLUEBOOK_CACHE", str(root / "cache"))
    model, tok = tiny_model("tiny-gpt2")
    reqs = bluebook.load_counterfact(n=N)
    _replicate((model, tok), reqs, root / "same_cap", ["memit", "memit_blue"], "same_cap")
    _replicate((model, tok), reqs, root / "equal_total_all", ["memit", "memit_blue"], "equal_total")
    _replicate((model, tok), reqs, root / "equal_total_base", ["memit"], "equal_total")
    yield root
    mp.undo()


def test_base_only_run_with_borrowed_blue_equals_a_full_equal_total_run(three_runs):
    same = curves.load_run(three_runs / "same_cap")
    full = curves.load_run(three_runs / "equal_total_all")
    fair = curves.load_run(three_runs / "equal_total_base")
    # what makes the borrowing sound: BLUE under both rules is one computation
    for k in (2, 4):
        assert full.methods["memit_blue"].evals[k]["columns"] == same.methods["memit_blue"].evals[k]["columns"]
        assert full.methods["memit"].evals[k]["columns"] == fair.methods["memit"].evals[k]["columns"]
    assert verdicts.run_caps(fair.folder, ["memit"]) == {"memit": 2 * STEPS}

    combined = curves.equal_total_run(fair, same)
    assert combined.borrowed == {"memit_blue": "same_cap"}
    assert combined.methods["memit_blue"].folder == same.folder / "memit_blue"
    got, want = verdicts.recorded_blue_vs_base(combined), verdicts.recorded_blue_vs_base(full)
    assert len(got) >= 3 and set(got) == set(want) and _values(got) == _values(want)
    note = got["counterfact:memit_blue>memit:efficacy"]["note"]
    assert "equal total per request (caps memit_blue 2, memit 4)" in note
    assert "memit_blue column is recorded run same_cap's" in note
    assert "equal total per request" in want["counterfact:memit_blue>memit:efficacy"]["note"]
    # the same-cap comparison of the same records differs in the base's budget, and says so
    assert "same cap per optimisation" in verdicts.recorded_blue_vs_base(same)[
        "counterfact:memit_blue>memit:efficacy"]["note"]
    # a BLUE column the fair run has itself is kept, not replaced
    assert curves.equal_total_run(full, same).borrowed == {}
    # a fair run without its own unedited row takes the same-cap run's (the same records)
    bare = dataclasses.replace(fair, unedited=None)
    assert curves.equal_total_run(bare, same).borrowed == {"memit_blue": "same_cap", "unedited": "same_cap"}
    assert curves.equal_total_run(bare, same).unedited == same.unedited


def _tampered(three_runs, tmp_path, change):
    donor = tmp_path / "donor"
    shutil.copytree(three_runs / "same_cap", donor)
    f = donor / "memit_blue" / "progress.json"
    prog = json.loads(f.read_text())
    change(prog["config"])
    f.write_text(json.dumps(prog))
    return curves.load_run(donor)


@pytest.mark.parametrize("change, message", [
    (lambda c: c["resolved_config"]["target"].update(steps=3), "target.steps: memit_blue 3 per optimisation"),
    (lambda c: c["resolved_config"].update(lam=c["resolved_config"]["lam"] * 2), "lam: memit_blue"),
    (lambda c: c["resolved_config"]["target"].update(lr=0.123), "target.lr: memit_blue 0.123"),
    (lambda c: c.update(case_ids=list(reversed(c["case_ids"]))), "case_ids: the two were run on different records"),
    (lambda c: c.update(model_fingerprint="0" * 16), "model_fingerprint: memit_blue '0000000000000000'"),
])
def test_a_column_computed_differently_is_refused_naming_the_field(three_runs, tmp_path, change, message):
    fair = curves.load_run(three_runs / "equal_total_base")
    with pytest.raises(ValueError, match="is not the column an equal-total run of memit") as err:
        curves.equal_total_run(fair, _tampered(three_runs, tmp_path, change))
    assert message in str(err.value)


def test_a_same_cap_base_cannot_pose_as_an_equal_total_one(three_runs):
    """The same-cap run's own base (cap 2, not 4) against its BLUE: not an equal-total pair."""
    same = curves.load_run(three_runs / "same_cap")
    base_only = curves.Run(same.folder, same.dataset, same.config, {"memit": same.methods["memit"]},
                           same.unedited, same.invocations)
    with pytest.raises(ValueError, match="an equal total needs the base's cap to be twice BLUE's"):
        curves.equal_total_run(base_only, same)


def test_recorded_tier_prefers_the_equal_total_claims_where_measured(three_runs, tmp_path):
    """Notebook 07's recorded tier: ``<run>`` alone gives the same-cap claims; with ``<run>_equal_total``
    beside it, the equal-total ones (the live notebooks' budget rule); a sibling with no evaluation
    point yet leaves the same-cap claims, not "not measured" placeholders."""
    root = tmp_path / "results"
    shutil.copytree(three_runs / "same_cap", root / "run")
    same = verdicts.recorded_blue_vs_base(curves.load_run(root / "run"))
    assert _values(verdicts.recorded_sequential_claims(root)) == _values(same)
    assert verdicts.recorded_sequential_claims(root, datasets=["zsre"]) == {}
    shutil.copytree(three_runs / "equal_total_base", root / "run_equal_total")
    got = verdicts.recorded_sequential_claims(root)
    assert _values(got) == _values(verdicts.recorded_blue_vs_base(curves.load_run(three_runs / "equal_total_all")))
    assert all("equal total per request" in c["note"] for k, c in got.items() if k.endswith("efficacy"))
    for f in (root / "run_equal_total" / "memit" / "evals").glob("*.json"):
        f.unlink()
    assert _values(verdicts.recorded_sequential_claims(root)) == _values(same)


def test_recorded_comparisons_give_both_budget_rules_side_by_side(three_runs, tmp_path):
    """One row per run, rule and pair: the same-cap comparison, then its equal-total sibling's; each
    row's claims are the ones that rule's run gives, and its budget the caps each side resolved."""
    root = tmp_path / "results"
    shutil.copytree(three_runs / "same_cap", root / "run")
    rows = verdicts.recorded_comparisons(root)
    assert [(r["rule"], r["edits"]) for r in rows] == [("same cap per optimisation", N)]
    shutil.copytree(three_runs / "equal_total_base", root / "run_equal_total")
    same, fair = verdicts.recorded_comparisons(root)
    assert (same["run"], fair["run"]) == ("run", "run_equal_total")
    assert fair["rule"] == "equal total per request" and fair["edits"] == N
    assert {m: b["cap"] for m, b in same["budget"].items()} == {"memit": STEPS, "memit_blue": STEPS}
    assert {m: b["cap"] for m, b in fair["budget"].items()} == {"memit": 2 * STEPS, "memit_blue": STEPS}
    assert fair["budget"]["memit_blue"] == same["budget"]["memit_blue"]       # the borrowed column
    want = verdicts.recorded_blue_vs_base(curves.load_run(three_runs / "equal_total_all"))
    assert _values({f"counterfact:memit_blue>memit:{m}": c for m, c in fair["claims"].items()}) == _values(want)
    want = verdicts.recorded_blue_vs_base(curves.load_run(root / "run"))
    assert _values({f"counterfact:memit_blue>memit:{m}": c for m, c in same["claims"].items()}) == _values(want)
    assert verdicts.recorded_comparisons(root, datasets=["zsre"]) == []


def test_comparison_rows_of_loaded_runs_equal_the_folder_scan_under_any_suffix(three_runs, tmp_path):
    """Notebook 09 §7 builds its rows from the runs it already loaded (``comparison_rows``); they are
    the rows ``recorded_comparisons`` finds by scanning the folder, and a sibling under another
    suffix (the notebook's ``equal_total_suffix``) is found when that suffix is given."""
    root = tmp_path / "results"
    shutil.copytree(three_runs / "same_cap", root / "run")
    shutil.copytree(three_runs / "equal_total_base", root / "run_fair")
    same = curves.load_run(root / "run")
    fair = curves.equal_total_run(curves.load_run(root / "run_fair"), same)
    rows = verdicts.comparison_rows(same, fair)
    assert [(r["run"], r["same_cap_run"], r["rule"]) for r in rows] == [
        ("run", "run", "same cap per optimisation"), ("run_fair", "run", "equal total per request")]
    scanned = verdicts.recorded_comparisons(root, suffix="_fair")
    assert json.dumps(scanned, sort_keys=True) == json.dumps(rows, sort_keys=True)
    assert [r["rule"] for r in verdicts.comparison_rows(same)] == ["same cap per optimisation"]
