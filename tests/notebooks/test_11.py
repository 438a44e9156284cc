"""Notebook 11 (long-form editing): the live edit on the embedded model and, from a run made here
on a tiny model, the recorded tier of its verdicts."""
import pytest

from bluebook import EditRequest
from bluebook.experiments.longform import longform_claims, read_run, run_longform
from bluebook.experiments.verdicts import budget_hparams
from bluebook.model.loading import tiny_model

pytestmark = pytest.mark.notebook
HP = {"layers": [0, 1, 2], "target": {"steps": 3, "window": 16}, "stats": {"n_samples": 40, "max_len": 64}}
TEXT = ("was founded by sailors in the year of the storm. It grew into a market town and later a city of "
        "bridges, famous for its glass and its music.")


def test_11_long_form(tmp_path, cache_dir, run_nb):
    model, tok = tiny_model("tiny-llama")
    reqs = [EditRequest("Tell me about {}.", s, f"{s} {TEXT}", case_id=i,
                        paraphrase_prompts=(f"What do you know about {s}?",),
                        neighborhood_prompts=("Tell me about the moon.",))
            for i, s in enumerate(["Atlantis", "Lemuria", "Avalon"])]
    folder = tmp_path / "runs" / "lf"
    # two processes' folders, as the recorded run is made: the unedited rows appear in both
    run_longform(model, tok, reqs, ["memit"], out=folder / "a", hparams=HP, max_new_tokens=8, progress=False)
    run_longform(model, tok, reqs, ["memit_blue"], out=folder / "b", hparams=HP, max_new_tokens=8, progress=False)
    # the equal-budget run: BLUE 2 + 2 steps per window, its base 4
    eq = budget_hparams(["memit", "memit_blue"], 2, "equal_total", overrides=HP)
    run_longform(model, tok, reqs[:2], ["memit", "memit_blue"], out=tmp_path / "runs" / "lf_eq" / "memit",
                 hparams=eq, max_new_tokens=8, progress=False)
    m = run_nb("11_long_form", tmp_path / "nb", results_dir=str(tmp_path / "runs"), recorded_run="lf",
               budget_run="lf_eq")
    # the first edit: BLUE updated two layers and brought the answer closer to the target
    fe = m["first_edit"]
    assert len(fe["layers"]) == 2 and fe["windows"] >= 2
    assert fe["rougeL"]["memit_blue"]["edit prompt"] >= 0.5 > fe["rougeL"]["unedited"]["edit prompt"]
    # the CI profile compares none live: the claims are the recorded run's, re-derived from its rows
    assert m["n_live"] == 0 and m["live"] is None
    rows, _ = read_run(folder)
    assert sorted((r["case_id"], r["method"]) for r in rows) == sorted(
        (i, meth) for i in range(3) for meth in ("none", "memit", "memit_blue"))
    want = longform_claims(rows, evidence="recorded")
    assert set(want) == {"memit_blue_long_form_prompt_rougeL", "memit_blue_long_form_paraphrase_rougeL"}
    assert set(m["claims"]) == set(want) | {f"{k}_equal_total" for k in want}
    eq_rows, _ = read_run(tmp_path / "runs" / "lf_eq")
    eq_want = longform_claims(eq_rows, evidence="recorded")
    for k, claim in eq_want.items():
        got = m["claims"][f"{k}_equal_total"]
        assert got["n"] == 2 and got["ours"] == pytest.approx(claim["ours"], abs=1e-6)
        assert "equal total per window: caps memit_blue 2, memit 4" in got["note"], got["note"]
    assert m["equal_total_rows"] == 6 and m["equal_total"]["n_records"] == 2
    for k in want:
        claim = m["claims"][k]
        assert claim["evidence"] == "recorded" and claim["n"] == 3 and "small sample (n=3)" in claim["note"]
        assert claim["ours"] == pytest.approx(want[k]["ours"], abs=1e-6)
    assert m["recorded_rows"] == 9
