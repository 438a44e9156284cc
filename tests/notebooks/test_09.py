"""Notebook 09 reads recorded sequential runs: on a run made here (tiny model) its verdicts follow
from the per-record columns; on the committed runs it executes and reports how far they got."""
import json
from pathlib import Path

import numpy as np
import pytest

import bluebook
import bluebook.experiments.replicate as rep
from bluebook.model.loading import tiny_model

pytestmark = pytest.mark.notebook
HP = {"target": {"steps": 3}, "stats": {"n_samples": 40, "max_len": 64}, "context_templates": [["{}"]]}
COMMITTED = Path(__file__).resolve().parents[2] / "results" / "sequential"


def test_09_on_a_run_made_here(tmp_path, cache_dir, run_nb):
    model, tok = tiny_model("tiny-gpt2")
    reqs = bluebook.load_counterfact(n=6)
    rep.replicate((model, tok), "counterfact", methods=["memit", "memit_blue"], n=6, batch=2,
                  out=tmp_path / "runs" / "cf", hparams=HP, progress=False, requests=reqs, eval_every=2)
    m = run_nb("09_sequential_curves", tmp_path / "nb", results_dir=str(tmp_path / "runs"), runs_to_show=["cf"])
    assert m["runs"]["cf"]["methods"]["memit"]["points"] == [2, 4, 6]
    for metric in ("efficacy", "generalization", "specificity"):
        c = m["claims"][f"counterfact:memit_blue>memit:{metric}"]
        a = json.loads((tmp_path / "runs" / "cf" / "memit_blue" / "evals" / "edits_00006.json").read_text())
        b = json.loads((tmp_path / "runs" / "cf" / "memit" / "evals" / "edits_00006.json").read_text())
        diff = 100 * (np.mean(a["columns"][metric]) - np.mean(b["columns"][metric]))
        assert c["ours"] == pytest.approx(diff, abs=0.01)
        lo, hi = c["interval"]
        want = "agrees" if lo > 0 else "disagrees" if hi < 0 else "inconclusive"
        assert c["verdict"] == want and c["evidence"] == "recorded" and c["n"] == 6


def test_09_equal_total_section_pairs_the_fair_base_with_the_same_cap_blue(tmp_path, cache_dir, run_nb):
    """§7: a base-only run at twice the cap (``cf_equal_total``) against the same-cap run's BLUE column;
    the claims follow from the two files, and a run without such a folder says it has none."""
    from bluebook.experiments.verdicts import budget_hparams

    model, tok = tiny_model("tiny-gpt2")
    reqs = bluebook.load_counterfact(n=4)
    runs = tmp_path / "runs"
    for name in ("cf", "zs"):
        rep.replicate((model, tok), "counterfact", methods=["memit", "memit_blue"], n=4, batch=2, out=runs / name,
                      hparams=HP, progress=False, requests=reqs, eval_every=2)
    rest = {k: v for k, v in HP.items() if k != "target"}
    rep.replicate((model, tok), "counterfact", methods=["memit"], n=4, batch=2, out=runs / "cf_equal_total",
                  hparams=budget_hparams(["memit"], 3, "equal_total", overrides=rest), progress=False,
                  requests=reqs, eval_every=2)
    m = run_nb("09_sequential_curves", tmp_path / "nb", results_dir=str(runs), runs_to_show=["cf", "zs"])
    assert m["runs"]["cf"]["equal_total"]["borrowed"] == {"memit_blue": "cf"}
    assert "equal_total" not in m["runs"]["zs"]
    a = json.loads((runs / "cf" / "memit_blue" / "evals" / "edits_00004.json").read_text())
    b = json.loads((runs / "cf_equal_total" / "memit" / "evals" / "edits_00004.json").read_text())
    for metric in ("efficacy", "generalization", "specificity"):
        c = m["claims"][f"counterfact:memit_blue>memit:{metric}_equal_total"]
        diff = 100 * (np.mean(a["columns"][metric]) - np.mean(b["columns"][metric]))
        assert c["ours"] == pytest.approx(diff, abs=0.01) and c["n"] == 4
        assert "equal total per request (caps memit_blue 3, memit 6)" in c["note"]
    assert (tmp_path / "nb" / "09_sequential_curves" / "figures" / "paired_by_budget.png").exists()


def test_09_on_the_committed_runs(tmp_path, run_nb):
    m = run_nb("09_sequential_curves", tmp_path / "nb", results_dir=str(COMMITTED))
    present = [p.name for p in COMMITTED.iterdir() if p.is_dir()] if COMMITTED.exists() else []
    assert set(m["runs"]) == set(present) & {"counterfact_n1000_b100", "zsre_n500_b100"}
    for name, run in m["runs"].items():
        status = json.loads((COMMITTED / name / "status.json").read_text())
        for meth, info in run["methods"].items():
            assert info["edits_done"] == status["methods"][meth]["edits_done"]
            assert info["points"] == status["methods"][meth]["evaluated_at"]


def test_record_notebook_writes_provenance_and_reads_back(tmp_path):
    """``record-notebook`` (here on 09, which reads files only) keeps metrics.json with a
    provenance.json naming the command, commit, machine and wall time; recorded_claims reads its
    claims back as the recorded tier."""
    from bluebook.experiments.cli import main
    from bluebook.experiments.notebooks import recorded_claims

    assert main(["record-notebook", "09", "--profile", "ci", "--root", str(tmp_path),
                 "-p", f"results_dir={COMMITTED}"]) == 0
    prov = json.loads((tmp_path / "09_sequential_curves" / "provenance.json").read_text())
    assert prov["command"].startswith("python -m bluebook record-notebook 09 --profile ci -p results_dir=")
    assert prov["wall_s"] > 0 and prov["machine"]["cores"] >= 1
    assert prov["parameters"] == {"results_dir": str(COMMITTED)} == prov["resolved_parameters"]
    m = json.loads((tmp_path / "09_sequential_curves" / "metrics.json").read_text())
    got = recorded_claims("09_sequential_curves", tmp_path)
    assert set(got) == set(m["claims"]) and all(c["evidence"] == "recorded" for c in got.values())
    assert all(c["note"].startswith("recorded: ci profile") for c in got.values())
