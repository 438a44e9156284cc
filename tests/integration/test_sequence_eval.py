"""Evaluation along a sequential run: points, stored files, exact edits, resume re-measures only
what a changed plan needs, from the kept snapshots."""
import errno
import json
import math
import os

import pytest
import torch

import bluebook
import bluebook.experiments.replicate as rep
from bluebook.experiments.sequence import EvalPlan, eval_points, read_safetensors
from bluebook.metrics.suite import AbilitySuite
from bluebook.model.loading import tiny_model

HP = {"target": {"steps": 3}, "stats": {"n_samples": 40, "max_len": 64}, "context_templates": [["{}"]]}
N, BATCH = 6, 2


def test_eval_points():
    assert eval_points(2000, 100, 500) == [500, 1000, 1500, 2000]
    assert eval_points(1050, 100, 500) == [500, 1000, 1050]
    assert eval_points(6, 2, None) == [6]
    assert eval_points(6, 2, 10) == [6]
    with pytest.raises(ValueError, match="multiple of batch=100"):
        eval_points(2000, 100, 250)
    with pytest.raises(ValueError, match="fluency_records"):
        EvalPlan(fluency_records=0)


def _run(out, every, suite=None, **kw):
    model, tok = tiny_model("tiny-gpt2")
    reqs = bluebook.load_counterfact(n=N)
    res = rep.replicate((model, tok), "counterfact", methods=["memit_blue"], n=N, batch=BATCH, out=out,
                        hparams=HP, progress=False, requests=reqs, eval_every=every, ability=suite, **kw)
    return res, model


def _final(out):
    prog = json.loads((out / "memit_blue" / "progress.json").read_text())
    return read_safetensors(out / "memit_blue" / prog["weights_file"])


def test_points_are_written_and_do_not_change_the_edits(tmp_path, cache_dir):
    suite = AbilitySuite(perplexity_texts=4, perplexity_max_len=32, known_facts=5)
    res, _ = _run(tmp_path / "every", 2, suite)
    plain, _ = _run(tmp_path / "end", None)
    a, b = _final(tmp_path / "every"), _final(tmp_path / "end")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    evals = res["methods"]["memit_blue"]["evals"]
    assert [e["edits"] for e in evals] == [2, 4, 6]
    assert [e["records"] for e in evals] == [2, 4, 6]             # the records edited so far
    for e in evals:
        for col in ("efficacy", "generalization", "specificity"):
            iv = e["intervals"][col]
            assert iv["low"] <= iv["value"] <= iv["high"] and iv["n"] == e["records"]
        assert e["memory"]["peak_rss_mb"] > 0
        ppl = e["ability"]["perplexity"]
        assert ppl["low"] <= ppl["value"] <= ppl["high"]
        # per-text mean NLLs are kept for paired comparisons; perplexity lies between their extremes
        nll = ppl["text_mean_nll"]
        assert len(nll) == ppl["n_texts"] == 4
        assert math.exp(min(nll)) <= ppl["value"] * (1 + 1e-9) and ppl["value"] <= math.exp(max(nll)) * (1 + 1e-9)
        kf = e["ability"].get("known_facts")
        if kf:
            assert len(kf["hits"]) == len(kf["case_ids"]) == kf["n"] and sum(kf["hits"]) / kf["n"] == kf["value"]
    # the final point is the table's row, and its per-record columns match cases.json
    cases = json.loads((tmp_path / "every" / "memit_blue" / "cases.json").read_text())
    last = json.loads((tmp_path / "every" / "memit_blue" / "evals" / "edits_00006.json").read_text())
    assert last["columns"]["efficacy"] == [round(c["rewrite_success"], 6) for c in cases]
    assert last["summary"] == res["methods"]["memit_blue"]["summary"]
    # the unedited baseline at 0 edits: all records, and known facts chosen there start at 1
    u = res["methods"]["unedited"]["evals"][0]
    assert u["edits"] == 0 and u["records"] == N
    ref = json.loads((tmp_path / "every" / "unedited" / "ability_reference.json").read_text())
    assert not set(map(str, ref["known_case_ids"])) & {str(r.case_id) for r in bluebook.load_counterfact(n=N)}
    if ref["known_case_ids"]:
        assert u["ability"]["known_facts"]["value"] == 1.0
    for b in json.loads((tmp_path / "every" / "memit_blue" / "progress.json").read_text())["batches"]:
        assert b["memory"]["peak_rss_mb"] >= b["memory"]["start_rss_mb"] > 0


def test_resume_with_a_new_ability_suite_remeasures_only_ability(tmp_path, cache_dir, monkeypatch):
    out = tmp_path / "run"
    _run(out, 2, AbilitySuite(perplexity_texts=3, perplexity_max_len=32, known_facts=0))
    before = {p.name: json.loads(p.read_text()) for p in (out / "memit_blue" / "evals").glob("*.json")}
    calls = []
    real = rep.edit
    monkeypatch.setattr(rep, "edit", lambda *a, **k: calls.append(1) or real(*a, **k))
    res, _ = _run(out, 2, AbilitySuite(perplexity_texts=5, perplexity_max_len=32, known_facts=0))
    assert calls == []                                            # no batch edited again
    after = {p.name: json.loads(p.read_text()) for p in (out / "memit_blue" / "evals").glob("*.json")}
    assert after.keys() == before.keys()
    for k in before:
        assert after[k]["columns"] == before[k]["columns"]          # record metrics kept
        assert after[k]["ability"]["perplexity"]["n_texts"] == 5    # ability measured again
        assert before[k]["ability"]["perplexity"]["n_texts"] == 3
    # the snapshot at 2 edits reproduces its own evaluation: measure it from scratch and compare
    (out / "memit_blue" / "evals" / "edits_00002.json").unlink()
    res2, _ = _run(out, 2, AbilitySuite(perplexity_texts=5, perplexity_max_len=32, known_facts=0))
    again = json.loads((out / "memit_blue" / "evals" / "edits_00002.json").read_text())
    assert again["columns"] == before["edits_00002.json"]["columns"]
    assert again["ability"]["perplexity"]["value"] == pytest.approx(after["edits_00002.json"]["ability"]
                                                                    ["perplexity"]["value"], rel=1e-6)


def test_curves_of_a_finished_and_a_stopped_run(tmp_path, cache_dir, monkeypatch):
    from bluebook.experiments.curves import curve_rows, export_run, load_run, pair_differences, table_at

    model, tok = tiny_model("tiny-gpt2")
    reqs = bluebook.load_counterfact(n=N)
    out = tmp_path / "run"
    rep.replicate((model, tok), "counterfact", methods=["memit", "memit_blue"], n=N, batch=BATCH, out=out,
                  hparams=HP, progress=False, requests=reqs, eval_every=2)
    run = load_run(out)
    assert list(run.methods) == ["memit", "memit_blue"] and run.common_points() == [2, 4, 6]
    assert all(r.finished and r.edits_done == N for r in run.methods.values())
    rows = curve_rows(run)
    # the unedited model on the same first-k records, recomputed from its per-record columns
    u2 = [r for r in rows if r["method"] == "unedited" and r["edits"] == 2 and r["metric"] == "efficacy"][0]
    first2 = run.unedited["columns"]["efficacy"][:2]
    assert u2["value"] == pytest.approx(100 * sum(first2) / 2) and u2["n"] == 2
    diffs = pair_differences(run, 6)
    for m, d in diffs["memit"].items():
        a = run.methods["memit_blue"].evals[6]["columns"][m]
        b = run.methods["memit"].evals[6]["columns"][m]
        assert d["value"] == pytest.approx(100 * (sum(a) - sum(b)) / len(a), abs=0.01)
        assert d["low"] <= d["value"] <= d["high"]
    t = table_at(run)
    assert t["edits"] == 6 and set(t["rows"]) == {"unedited", "memit", "memit_blue"}
    assert t["rows"]["memit"]["efficacy"] == run.methods["memit"].evals[6]["summary"]["efficacy"]
    files = export_run(out, tmp_path / "export")
    assert files and not list((tmp_path / "export").rglob("*.safetensors"))
    assert not list((tmp_path / "export").rglob("cases.json"))
    assert json.loads((tmp_path / "export" / "status.json").read_text())["methods"]["memit"]["finished"]
    assert load_run(tmp_path / "export").common_points() == [2, 4, 6]      # the export reads back

    # a run stopped in its third batch: read as far as it got, nothing beyond
    calls = {"n": 0}
    real = rep.edit

    def dies(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("stopped")
        return real(*a, **k)
    monkeypatch.setattr(rep, "edit", dies)
    with pytest.raises(KeyboardInterrupt):
        rep.replicate((model, tok), "counterfact", methods=["memit"], n=N, batch=BATCH, out=tmp_path / "stopped",
                      hparams=HP, progress=False, requests=reqs, eval_every=2)
    part = load_run(tmp_path / "stopped")
    assert part.methods["memit"].batches_done == 2 and not part.methods["memit"].finished
    assert part.methods["memit"].points == [2, 4] and part.unedited is None     # 4 edits: evaluated, 6: never


def test_methods_none_runs_only_the_unedited_baseline(tmp_path, cache_dir):
    res, _ = _run_methods(tmp_path / "u", "none")
    assert set(res["methods"]) == {"unedited"}
    assert (tmp_path / "u" / "unedited" / "evals" / "edits_00000.json").exists()


def _run_methods(out, methods):
    model, tok = tiny_model("tiny-gpt2")
    reqs = bluebook.load_counterfact(n=N)
    return rep.replicate((model, tok), "counterfact", methods=methods, n=N, batch=BATCH, out=out, hparams=HP,
                         progress=False, requests=reqs), model


def _failing_mkstemp(monkeypatch, fragment, err):
    import tempfile

    import bluebook.runs as runs_mod
    real = tempfile.mkstemp

    def mkstemp(*a, **k):
        if fragment in str(k.get("prefix", "")):
            raise OSError(err, os.strerror(err))
        return real(*a, **k)
    monkeypatch.setattr(runs_mod.tempfile, "mkstemp", mkstemp)


def test_full_disk_during_a_checkpoint_keeps_what_was_written(tmp_path, cache_dir, monkeypatch):
    ref, _ = _run(tmp_path / "ref", None)
    _failing_mkstemp(monkeypatch, "weights_b2", errno.ENOSPC)
    with pytest.raises(OSError, match=r"checkpoint of batch 2 .*No space left on device.* resumes") as info:
        _run(tmp_path / "full", None)
    assert info.value.errno == errno.ENOSPC
    prog = json.loads((tmp_path / "full" / "memit_blue" / "progress.json").read_text())
    assert prog["batches_done"] == 1 and (tmp_path / "full" / "memit_blue" / prog["weights_file"]).exists()
    monkeypatch.undo()
    again, _ = _run(tmp_path / "full", None)                  # space again: resumes to the same results
    assert again["methods"]["memit_blue"]["summary"] == ref["methods"]["memit_blue"]["summary"]
    a, b = _final(tmp_path / "full"), _final(tmp_path / "ref")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unwritable_output_folder_fails_before_any_work(tmp_path, cache_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(rep, "edit", lambda *a, **k: calls.append(1))
    _failing_mkstemp(monkeypatch, ".write-test", errno.EROFS)
    with pytest.raises(OSError, match=r"output folder .*ro.* is not writable .*Read-only file system"):
        _run(tmp_path / "ro", None)
    assert calls == []


def test_fluency_subset_is_the_first_records_and_prompts(cache_dir):
    """An evaluation point with fluency_records=2, fluency_prompts=1 generates exactly for the first
    two records' first prompts, the texts evaluate_counterfact(generation=True) gives for them."""
    from dataclasses import replace

    from bluebook.experiments.sequence import evaluate_point
    from bluebook.metrics import evaluate_counterfact
    model, tok = tiny_model("tiny-gpt2")
    reqs = bluebook.load_counterfact(n=3)
    plan = EvalPlan(generation=True, fluency_records=2, fluency_prompts=1, seed=3)
    rec, cases = evaluate_point(model, tok, reqs, plan)
    assert [len(c.get("text", [])) for c in cases] == [1, 1, 0]
    assert rec["columns"]["fluency"][2] is None and rec["intervals"]["fluency"]["n"] == 2
    trimmed = [replace(r, generation_prompts=r.generation_prompts[:1]) for r in reqs[:2]]
    ref = evaluate_counterfact(model, tok, trimmed, generation=True, seed=3)
    assert [c["text"] for c in cases[:2]] == [c["text"] for c in ref]
    assert [c["ngram_entropy"] for c in cases[:2]] == [c["ngram_entropy"] for c in ref]
