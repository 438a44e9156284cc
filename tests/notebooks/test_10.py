"""Notebook 10 (beyond the paper: BLUE's second layer chosen per batch): the live comparison on the
embedded model and, from a run made here on a tiny model, the recorded tier of its verdicts."""
import json

import numpy as np
import pytest

import bluebook
import bluebook.experiments.replicate as rep
from bluebook.model.loading import tiny_model

pytestmark = pytest.mark.notebook
HP = {"layers": [0, 1, 2], "target": {"steps": 3}, "stats": {"n_samples": 40, "max_len": 64},
      "context_templates": [["{}"]]}
PAIR = ("memit_blue", "memit_blue_dynamic")


def test_10_dynamic_layers(tmp_path, cache_dir, run_nb, live_of):
    model, tok = tiny_model("tiny-llama")
    reqs = bluebook.load_counterfact(n=6)
    rep.replicate((model, tok), "counterfact", methods=list(PAIR), n=6, batch=2, out=tmp_path / "runs" / "cf",
                  hparams=HP, progress=False, requests=reqs)
    m = run_nb("10_dynamic_layers", tmp_path / "nb", results_dir=str(tmp_path / "runs"), runs_to_show=["cf"])
    crit = m["critical_layers"]
    # the first batch: the first layer kept, the later layer with the largest measured gap taken
    fb = m["first_batch"]
    gaps = {int(l): c["gap"] for l, c in fb["candidates"].items()}
    assert sorted(gaps) == crit[1:] and fb["chosen"][0] == crit[0]
    best = max(gaps.values())
    assert fb["chosen"][1] == max(l for l, g in gaps.items() if g >= best - 1e-6 * max(1, best))
    # fixed BLUE always updates the boundary; the dynamic rule the first layer and one later layer
    for batch in m["layers_per_batch"]["memit_blue"]:
        assert batch == [crit[0], crit[-1]]
    for batch in m["layers_per_batch"]["memit_blue_dynamic"]:
        assert batch[0] == crit[0] and batch[1] in crit[1:]
    assert m["methods"]["memit_blue_dynamic"]["changed layers"] == sorted(
        {l for b in m["layers_per_batch"]["memit_blue_dynamic"] for l in b})
    # live claims re-derived from the tables (×100, the summaries keep 2 decimals)
    c = live_of(m)
    for k in ("efficacy", "generalization", "specificity"):
        got = c[f"counterfact:memit_blue_dynamic>memit_blue:{k}"]
        want = m["methods"]["memit_blue_dynamic"][k] - m["methods"]["memit_blue"][k]
        assert got["ours"] == pytest.approx(want, abs=0.011) and got["n"] == m["n_edits"] == 4
        # the recorded run (6 records) is larger than the small live sample, so it decides
        rec = m["claims"][f"counterfact:memit_blue_dynamic>memit_blue:{k}"]
        assert rec["evidence"] == "recorded" and rec["n"] == 6
        a, b = (json.loads((tmp_path / "runs" / "cf" / v / "evals" / "edits_00006.json").read_text()) for v in
                PAIR[::-1])
        assert rec["ours"] == pytest.approx(100 * (np.mean(a["columns"][k]) - np.mean(b["columns"][k])), abs=0.01)
    # the recorded choice per batch is the run's own progress file
    prog = json.loads((tmp_path / "runs" / "cf" / "memit_blue_dynamic" / "progress.json").read_text())
    assert m["recorded_layers_per_batch"]["cf: memit_blue_dynamic"] == [b["layers"] for b in prog["batches"]]
    assert m["summary"]
