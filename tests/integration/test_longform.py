"""Long targets (a paragraph as ``target_new``) through the one edit loop, on tiny random models."""
import json

import pytest
import torch

import bluebook
from bluebook import EditRequest
from bluebook.core.config import EditConfig, StatsConfig, TargetConfig
from bluebook.core.longform import (
    optimize_long_cached,
    optimize_long_plain,
    read_long_states,
    target_windows,
)
from bluebook.experiments.longform import longform_claims, read_rows, read_run, run_longform, summarize_longform

LONG = ("was founded by a group of sailors in the year of the storm. It grew into a market town and later "
        "a city of bridges, famous for its glass, its music and its long winter fairs. Today it is known for "
        "its university and its harbour.")
REQ = EditRequest("Tell me about {}.", "Atlantis", "Atlantis " + LONG, case_id=7,
                  paraphrase_prompts=("What do you know about Atlantis?",),
                  neighborhood_prompts=("Tell me about the moon.",))
WINDOW = 16


def _cfg(steps=6, **kw):
    return EditConfig(layers=(0, 1, 2, 3), lam=1e-2, alpha=1e-2,
                      target=TargetConfig(steps=steps, lr=0.5, window=WINDOW, **kw),
                      stats=StatsConfig(n_samples=40, max_len=64))


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_windows_cover_the_target_in_order_with_the_token_before_each_as_key(tiny):
    _, tok = tiny
    prompt = tok(REQ.text)["input_ids"]
    target = tok(REQ.new_text, add_special_tokens=False)["input_ids"]
    ws = target_windows(tok, REQ, WINDOW)
    assert [t for w in ws for t in w.labels] == target                   # every target token, once, in order
    assert all(len(w.labels) == WINDOW for w in ws[:-1]) and 1 <= len(ws[-1].labels) <= WINDOW
    full = prompt + target
    for w in ws:
        assert list(w.ids) == full[:w.at + len(w.labels)]
        assert full[w.at + 1] == w.labels[0]                             # the key token precedes its window
    assert ws[0].at == len(prompt) - 1                                   # window 1's key: the prompt's last token


def test_cached_long_targets_equal_the_plain_loop(tiny):
    model, tok = tiny
    model = model.double()
    cfg = TargetConfig(steps=5, lr=0.05, window=WINDOW, early_stop=0.0, weight_decay=0.0)
    a = optimize_long_plain(model, tok, REQ, 2, cfg)
    b = optimize_long_cached(model, tok, REQ, 2, cfg)
    assert a.z.shape == (len(target_windows(tok, REQ, WINDOW)), model.config.hidden_size if hasattr(
        model.config, "hidden_size") else model.config.n_embd)
    torch.testing.assert_close(b.z, a.z, rtol=0, atol=1e-10)
    torch.testing.assert_close(b.h0, a.h0, rtol=0, atol=1e-10)
    assert [x for t in a.nll for x in t] == pytest.approx([x for t in b.nll for x in t], abs=1e-10)
    # the optimisation does what it is for: without the weight decay, each window's NLL falls
    assert all(t[-1] < t[0] for t in a.nll)


def test_long_states_are_read_at_the_key_tokens_of_the_full_text(tiny):
    model, tok = tiny
    ws = target_windows(tok, REQ, WINDOW)
    st = read_long_states(model, tok, [REQ], WINDOW, key_layers=[1], hidden_layers=[2])
    # independent: run the whole text once with output_hidden_states and pick the key positions
    ids = torch.tensor([ws[-1].ids])
    with torch.no_grad():
        hs = model(input_ids=ids, output_hidden_states=True).hidden_states
    pos = [w.at for w in ws]
    torch.testing.assert_close(st.hidden[2], hs[3][0, pos].T, rtol=1e-5, atol=1e-5)
    assert st.keys[1].shape[1] == len(ws)


@pytest.mark.parametrize("method,n_layers", [("memit_blue", 2), ("alphaedit", 4), ("prune_blue", 2),
                                             ("memit_blue_dynamic", 2)])
def test_long_edit_updates_the_method_layers_one_column_per_window_and_restores(tiny, cache_dir, method, n_layers):
    model, tok = tiny
    before = _weights(model)
    res = bluebook.edit(model, tok, [REQ], method, hparams=_cfg(), progress=False)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    n_win = len(target_windows(tok, REQ, WINDOW))
    assert len(res.layers) == n_layers
    assert res.diagnostics["long_form"] == {"window": WINDOW, "columns": [0] * n_win}
    assert res.diagnostics["config"].target.steps == 6           # the configuration the long edit ran with
    assert all(k.shape[1] == n_win for k in res.keys.values())
    with res:
        changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == n_layers
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_long_edit_writes_the_windows_it_optimised(tiny, cache_dir):
    """After a MEMIT long edit, the edited model gives the target (teacher-forced on the full text,
    window by window) a higher log-probability than the unedited model does."""
    model, tok = tiny
    ws = target_windows(tok, REQ, WINDOW)
    ids = torch.tensor([ws[-1].ids + ws[-1].labels[-1:]])

    def window_logp():
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        return [float(sum(lp[w.at + i, t] for i, t in enumerate(w.labels))) for w in ws]
    before = window_logp()
    res = bluebook.edit(model, tok, [REQ], "memit", hparams=_cfg(steps=20), progress=False)
    with res:
        after = window_logp()
    assert sum(after) > sum(before)


def test_mixed_long_and_short_targets_in_one_batch_are_refused(tiny, cache_dir):
    model, tok = tiny
    short = EditRequest("The capital of {} is", "France", "Rome", "Paris", case_id=1)
    before = _weights(model)
    with pytest.raises(ValueError, match=r"target_new.*\[7\].*target\.window=16"):
        bluebook.edit(model, tok, [REQ, short], "memit", hparams=_cfg(), progress=False)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_long_target_bad_input_names_the_field(tiny, cache_dir):
    model, tok = tiny
    with pytest.raises(ValueError, match="target_new"):
        EditRequest("Tell me about {}.", "Atlantis", "   \n ")
    too_long = EditRequest("Tell me about {}.", "Atlantis", " ".join(["harbour"] * 400), case_id=3)
    before = _weights(model)
    with pytest.raises(ValueError, match=r"case_id 3.*target_new.*more than the model's context of 256"):
        bluebook.edit(model, tok, [too_long], "memit_blue", hparams=_cfg(), progress=False)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    with pytest.raises(ValueError, match="target.window"):
        TargetConfig(window=0)
    with pytest.raises(ValueError, match="target.long_form"):
        TargetConfig(long_form="sometimes")


def test_long_target_that_tokenizes_to_nothing_is_refused(tiny, cache_dir):
    model, tok = tiny

    class Empty:
        """The tiny tokenizer, except that the target text tokenizes to no ids."""
        def __init__(self, tok):
            self._tok = tok

        def __call__(self, text, *a, **kw):
            out = self._tok(text, *a, **kw)
            if isinstance(text, str) and text == " " + LONG:
                out["input_ids"] = []
            return out

        def __len__(self):
            return len(self._tok)

        def __getattr__(self, name):
            return getattr(self._tok, name)
    req = EditRequest("Tell me about {}.", "Atlantis", LONG, case_id=5)
    with pytest.raises(ValueError, match=r"target_new .*tokenizes to no tokens"):
        bluebook.edit(model, Empty(tok), [req], "memit", hparams=_cfg(long_form="always"), progress=False)


def test_long_form_run_scores_resumes_to_the_same_rows_and_gives_claims(tiny, cache_dir, tmp_path):
    model, tok = tiny
    reqs = [REQ, EditRequest("Tell me about {}.", "Lemuria", "Lemuria " + LONG.replace("sailors", "farmers"),
                             case_id=8, paraphrase_prompts=("Can you describe Lemuria?",),
                             neighborhood_prompts=("Tell me about the sun.", "Tell me about rain."))]
    methods = ["memit", "memit_blue"]
    hp = _cfg(steps=4)
    full = run_longform(model, tok, reqs, methods, out=tmp_path / "a", hparams=hp, max_new_tokens=12,
                        progress=False)
    assert [(r["case_id"], r["method"]) for r in full] == [(c, m) for c in (7, 8) for m in ("none", *methods)]
    for r in full:
        for kind in ("prompt", "paraphrase"):
            s = r["scores"][kind]
            assert all(0.0 <= s[k] <= 1.0 for k in ("rouge1", "rouge2", "rougeL", "bleu", "token_f1"))
            assert -1.0 <= s["similarity"] <= 1.0
    assert [len(r["locality"]) for r in full if r["method"] != "none"] == [1, 1, 2, 2]
    # a crash after the third row: the rerun computes the rest and ends with the same rows
    lines = (tmp_path / "a" / "rows.jsonl").read_text().splitlines()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text((tmp_path / "a" / "config.json").read_text())
    (tmp_path / "b" / "rows.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])
    again = run_longform(model, tok, reqs, methods, out=tmp_path / "b", hparams=hp, max_new_tokens=12,
                         progress=False)

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in ("seconds", "edit_seconds", "timings")} for r in rows]
    assert strip(again) == strip(full)
    assert len(read_rows(tmp_path / "b" / "rows.jsonl")) == 6
    with pytest.raises(ValueError, match="max_new_tokens"):
        run_longform(model, tok, reqs, methods, out=tmp_path / "b", hparams=hp, max_new_tokens=5, progress=False)
    summary = summarize_longform(full)
    assert summary["n_records"] == 2 and set(summary["methods"]) == {"none", *methods}
    mean = sum(r["scores"]["prompt"]["rougeL"] for r in full if r["method"] == "memit") / 2
    assert summary["methods"]["memit"]["prompt.rougeL"]["value"] == pytest.approx(mean, abs=1e-4)
    claims = longform_claims(full)
    assert set(claims) == {"memit_blue_long_form_prompt_rougeL", "memit_blue_long_form_paraphrase_rougeL"}
    c = claims["memit_blue_long_form_prompt_rougeL"]
    assert c["n"] == 2 and c["verdict"] in ("agrees", "disagrees", "inconclusive") and "small" in c["note"]
    json.dumps(claims)


def test_longform_cli_records_provenance_and_a_summary(tmp_path, cache_dir):
    import json as _json

    from bluebook.experiments.cli import main
    hp = _json.dumps({"layers": [0, 1, 2], "target": {"steps": 2, "window": 32},
                      "stats": {"n_samples": 40, "max_len": 64}})
    out = tmp_path / "lf"
    import signal
    mine = signal.getsignal(signal.SIGTERM)
    assert main(["longform", "--model", "tiny-llama", "--start", "1", "--n", "1", "--methods", "memit,memit_blue",
                 "--hparams", hp, "--max-new-tokens", "4", "--out", str(out), "--quiet"]) == 0
    assert signal.getsignal(signal.SIGTERM) is mine      # the caller's SIGTERM handler is back
    inv = read_rows(out / "invocations.jsonl")
    assert [e["event"] for e in inv] == ["start", "end"] and inv[1]["status"] == "0" and "commit" in inv[0]
    rows = read_rows(out / "rows.jsonl")
    assert [(r["case_id"], r["method"]) for r in rows] == [(1, "none"), (1, "memit"), (1, "memit_blue")]
    summary = _json.loads((out / "summary.json").read_text())
    assert summary["summary"]["n_records"] == 1 and set(summary["claims"]) == {
        "memit_blue_long_form_prompt_rougeL", "memit_blue_long_form_paraphrase_rougeL"}
    assert all(c["evidence"] == "recorded" and "small sample (n=1)" in c["note"] for c in summary["claims"].values())


def test_longform_cli_budget_gives_blue_half_the_per_window_steps_of_its_base(tmp_path, cache_dir):
    """``--budget equal_total --budget-steps S``: each of BLUE's two optimisations per window is
    capped at S and the base's single one at 2·S (the same total), on top of the JSON overrides;
    the run's config.json records the resolved caps and every step count stays within them."""
    import json as _json

    from bluebook.experiments.cli import main
    hp = _json.dumps({"layers": [0, 1, 2], "target": {"steps": 9, "window": 32},
                      "stats": {"n_samples": 40, "max_len": 64}})
    out = tmp_path / "lf"
    assert main(["longform", "--model", "tiny-llama", "--start", "1", "--n", "1", "--methods", "memit,memit_blue",
                 "--hparams", hp, "--budget", "equal_total", "--budget-steps", "2", "--max-new-tokens", "4",
                 "--out", str(out), "--quiet"]) == 0
    cfg = _json.loads((out / "config.json").read_text())["hparams"]
    assert cfg["memit"]["target"]["steps"] == 4 and cfg["memit_blue"]["target"]["steps"] == 2
    assert cfg["memit"]["target"]["window"] == cfg["memit_blue"]["target"]["window"] == 32   # overrides kept
    rows = {r["method"]: r for r in read_rows(out / "rows.jsonl")}
    assert set(rows) == {"none", "memit", "memit_blue"}
    for m, cap in (("memit", 4), ("memit_blue", 2)):
        steps = [s for per_layer in rows[m]["target_steps"].values() for s in per_layer]
        assert steps and max(steps) <= cap, (m, rows[m]["target_steps"])
    assert len(rows["memit_blue"]["target_steps"]) == 2 and len(rows["memit"]["target_steps"]) == 1
    assert rows["memit"]["steps_cap"] == 4 and rows["memit_blue"]["steps_cap"] == 2
    # the claims name the rule from the caps the rows carry: an equal total, not the same cap
    claims = _json.loads((out / "summary.json").read_text())["claims"]
    assert all("v* budget: equal total per window: caps memit_blue 2, memit 4" in c["note"]
               for c in claims.values()), [c["note"] for c in claims.values()]
    # rows written before rows carried their cap get it from the folder's config.json on reading
    lines = [_json.loads(x) for x in (out / "rows.jsonl").read_text().splitlines()]
    (out / "rows.jsonl").write_text("".join(_json.dumps({k: v for k, v in r.items() if k != "steps_cap"}) + "\n"
                                            for r in lines))
    old_rows, _ = read_run(out)
    assert {r["method"]: r.get("steps_cap") for r in old_rows} == {"none": None, "memit": 4, "memit_blue": 2}
    assert main(["longform", "--model", "tiny-llama", "--hparams", "gpt2-xl", "--budget", "equal_total",
                 "--out", str(tmp_path / "x"), "--quiet"]) == 2


def test_summary_counts_the_records_whose_answer_reproduces_the_target():
    """``prompt.reproduced``: the share of records at ROUGE-L ≥ 0.5 (the threshold itself counts),
    with the Wilson interval written out by hand (the summary keeps 4 digits)."""
    from bluebook.experiments.longform import REPRODUCED, SCORED
    assert REPRODUCED == 0.5

    def row(case, method, rl):
        scores = {k: {m: rl if m == "rougeL" else 0.0 for m in SCORED} for k in ("prompt", "paraphrase")}
        return {"case_id": case, "method": method, "scores": scores, "edit_seconds": 1.0,
                "locality": [{"rougeL": 1.0, "unchanged": 1.0}]}
    rows = [row(c, "memit", rl) for c, rl in enumerate([0.6, 0.4, 0.5, 0.49])]
    rows += [row(c, "none", 0.1) for c in range(4)]
    got = summarize_longform(rows)["methods"]
    k, n, z = 2, 4, 1.959963984540054
    p = k / n
    centre, half = (p + z * z / (2 * n)), z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    lo, hi = (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)
    rep = got["memit"]["prompt.reproduced"]
    assert rep["value"] == pytest.approx(0.5) and rep["n"] == 4
    assert rep["low"] == pytest.approx(lo, abs=1e-4) and rep["high"] == pytest.approx(hi, abs=1e-4)   # 4 digits kept
    assert got["none"]["prompt.reproduced"]["value"] == 0.0
