"""The sequential replication runner: outputs, exact resume after a crash, refusal of foreign checkpoints."""
import json

import pytest
import torch

import bluebook
import bluebook.experiments.cli as cli
import bluebook.experiments.replicate as rep
from bluebook.model.loading import tiny_model

HP = {"target": {"steps": 3}, "stats": {"n_samples": 40, "max_len": 64}, "context_templates": [["{}"]]}
METHODS = ["alphaedit", "memit_blue"]
N, BATCH = 6, 2          # three sequential batches


@pytest.fixture
def requests_():
    return bluebook.load_counterfact(n=N)


def _run(out, requests_, **kw):
    model, tok = tiny_model("tiny-llama")
    args = dict(methods=METHODS, n=N, batch=BATCH, out=out, hparams=HP, progress=False, requests=requests_)
    args.update(kw)
    return rep.replicate((model, tok), "counterfact", **args), model


def _final_weights(out, method):
    prog = json.loads((out / method / "progress.json").read_text())
    from safetensors.torch import load_file
    return load_file(str(out / method / prog["weights_file"]))


class _Counter:
    def __init__(self, fail_at=None):
        self.calls, self.fail_at = 0, fail_at

    def __call__(self, *a, **kw):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated kill")
        return bluebook.edit(*a, **kw)


def test_run_writes_tables_and_restores_model(tmp_path, cache_dir, requests_):
    model0, _ = tiny_model("tiny-llama")
    res, model = _run(tmp_path / "a", requests_)
    for f in ("results.json", "results.csv", "results.md"):
        assert (tmp_path / "a" / f).exists()
    assert set(res["methods"]) == {"unedited", *METHODS}
    for m in METHODS:
        s = res["methods"][m]["summary"]
        assert s["n_cases"] == N and 0 <= s["efficacy"] <= 100
        assert res["methods"][m]["n_batches"] == 3
        prog = json.loads((tmp_path / "a" / m / "progress.json").read_text())
        assert prog["batches_done"] == 3
        for b in prog["batches"]:                          # v* steps per request at each optimised layer
            # BLUE optimises v* at both layers it updates; the base method only at the last one
            want = b["layers"] if m.endswith("_blue") else [max(b["layers"])]
            assert len(b["layers"]) == 2 or not m.endswith("_blue")
            assert sorted(int(l) for l in b["target_steps"]) == want
            assert all(len(v) == BATCH and all(0 <= s <= 3 for s in v) for v in b["target_steps"].values())
    md = (tmp_path / "a" / "results.md").read_text()
    assert md.index("| unedited |") < md.index("| memit_blue |") < md.index("| alphaedit |")   # paper order
    assert "n/a" in md                                     # fluency/consistency not run
    csv_lines = (tmp_path / "a" / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("method,efficacy") and len(csv_lines) == 1 + 1 + len(METHODS)
    # the caller's model is back to its unedited weights, bit for bit
    for (k, a), b in zip(model0.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k


def test_resume_after_kill_matches_uninterrupted(tmp_path, cache_dir, requests_, monkeypatch):
    full, _ = _run(tmp_path / "full", requests_)

    crash = _Counter(fail_at=2)                            # dies inside batch 2 of the first method
    monkeypatch.setattr(rep, "edit", crash)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "resumed", requests_)
    prog = json.loads((tmp_path / "resumed" / METHODS[0] / "progress.json").read_text())
    assert prog["batches_done"] == 1

    again = _Counter()
    monkeypatch.setattr(rep, "edit", again)
    resumed, _ = _run(tmp_path / "resumed", requests_)
    assert again.calls == 2 + 3                            # batches 2-3 of the first method, 3 of the second

    for m in METHODS:
        wa, wb = _final_weights(tmp_path / "full", m), _final_weights(tmp_path / "resumed", m)
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), (m, k)
        assert full["methods"][m]["summary"] == resumed["methods"][m]["summary"]
        ca = json.loads((tmp_path / "full" / m / "cases.json").read_text())
        cb = json.loads((tmp_path / "resumed" / m / "cases.json").read_text())
        assert ca == cb

    # a finished run is not recomputed
    idle = _Counter()
    monkeypatch.setattr(rep, "edit", idle)
    _run(tmp_path / "resumed", requests_)
    assert idle.calls == 0


def test_mismatched_checkpoint_is_refused(tmp_path, cache_dir, requests_, monkeypatch):
    crash = _Counter(fail_at=2)
    monkeypatch.setattr(rep, "edit", crash)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "o", requests_)
    monkeypatch.setattr(rep, "edit", bluebook.edit)
    with pytest.raises(rep.CheckpointMismatch, match="different configuration.*batch"):
        _run(tmp_path / "o", requests_, batch=3)
    with pytest.raises(rep.CheckpointMismatch, match="case_ids"):
        _run(tmp_path / "o", bluebook.load_counterfact(n=N, offset=1))
    with pytest.raises(rep.CheckpointMismatch, match="hparams"):
        _run(tmp_path / "o", requests_, hparams={**HP, "target": {"steps": 4}})
    res, _ = _run(tmp_path / "o", requests_, batch=3, methods=METHODS[:1], resume=False)
    assert res["methods"][METHODS[0]]["n_batches"] == 2


def test_cli_registers_replicate(tmp_path):
    import argparse
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd")
    cli.add_cli(sub)
    args = p.parse_args(["replicate", "--methods", "memit,memit_blue", "--n", "10", "--batch", "5",
                         "--out", str(tmp_path), "--no-resume", "--generation"])
    assert args.func is cli.run_replicate and args.no_resume and args.generation and args.n == 10


def test_cli_budget_gives_blue_and_its_base_the_same_total_v_star_steps(tmp_path):
    import argparse
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd")
    cli.add_cli(sub)
    args = p.parse_args(["replicate", "--methods", "memit,memit_blue,alphaedit_blue", "--budget", "equal_total",
                         "--budget-steps", "20", "--out", str(tmp_path)])
    hp = cli._hparams(args)
    assert {m: h["target"]["steps"] for m, h in hp.items()} == {"memit": 40, "memit_blue": 20, "alphaedit_blue": 20}
    args = p.parse_args(["replicate", "--methods", "memit,memit_blue", "--budget", "same_cap", "--out", str(tmp_path)])
    assert {m: h["target"]["steps"] for m, h in cli._hparams(args).items()} == {"memit": 25, "memit_blue": 25}
    args = p.parse_args(["replicate", "--budget", "equal_total", "--hparams", "gpt2-xl", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--budget"):
        cli._hparams(args)
    assert cli._hparams(p.parse_args(["replicate", "--out", str(tmp_path)])) is None
    # the unedited baseline alone, in a budgeted run's folder (scripts/recorded_runs.sh ... fair)
    args = p.parse_args(["replicate", "--methods", "none", "--budget", "equal_total", "--out", str(tmp_path)])
    assert cli._hparams(args) == {}


def test_unknown_method_fails_before_work(tmp_path):
    with pytest.raises(ValueError):
        rep.replicate("tiny-llama", methods=["memit", "nope"], n=2, batch=1, out=tmp_path, progress=False)
    assert not (tmp_path / "unedited").exists()


def test_checkpoint_from_before_a_config_field_existed_resumes_and_a_changed_value_is_refused(
        tmp_path, cache_dir, requests_, monkeypatch):
    """A field added later with its default (here the long-form settings) is what an older checkpoint
    ran with; the same field at a non-default value is a different configuration."""
    out = tmp_path / "o"
    monkeypatch.setattr(rep, "edit", _Counter(fail_at=2))        # stopped inside batch 2
    with pytest.raises(KeyboardInterrupt):
        _run(out, requests_, methods=METHODS[:1])
    monkeypatch.setattr(rep, "edit", bluebook.edit)
    pf = out / METHODS[0] / "progress.json"
    prog = json.loads(pf.read_text())
    rc = prog["config"]["resolved_config"]
    for k in ("window", "long_form"):
        rc["target"].pop(k)
    rc.pop("long_overrides")
    pf.write_text(json.dumps(prog))
    res, _ = _run(out, requests_, methods=METHODS[:1])
    assert res["methods"][METHODS[0]]["n_batches"] == 3
    # a value that differs from the default is still a mismatch
    prog = json.loads(pf.read_text())
    prog["config"]["resolved_config"]["target"]["window"] = 8
    pf.write_text(json.dumps(prog))
    with pytest.raises(rep.CheckpointMismatch, match="resolved_config"):
        _run(out, requests_, methods=METHODS[:1])


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny Llama saved as a local model folder, as a user would pass it to ``--model``."""
    d = tmp_path_factory.mktemp("tiny-llama-folder")
    model, tok = tiny_model("tiny-llama")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.mark.parametrize("argv,message", [
    (["replicate", "--methods", "memit,memitx"], "unknown method 'memitx'"),
    (["replicate", "--methods", "memit,memit"], "methods contains duplicates"),
    (["replicate", "--batch", "0"], "argument --batch: must be at least 1, got 0"),
    (["replicate", "--n", "ten"], "argument --n: expected an integer, got 'ten'"),
    (["replicate", "--dataset", "squad"], "argument --dataset: invalid choice: 'squad'"),
    (["replicate", "--budget", "equal_total", "--hparams", "x.yaml"], "cannot be combined with --hparams"),
    (["replicate", "--n", "4", "--batch", "2", "--eval-every", "3", "--model", "{tiny}"], "eval_every"),
    (["replicate", "--n", "2", "--batch", "2", "--model", "{tiny}", "--data", "{missing}"], "{missing}"),
    (["longform", "--start", "-1"], "argument --start: must be at least 0, got -1"),
    (["longform", "--model", "{tiny}", "--n", "1", "--hparams", "{lam: 1}"],
     "--hparams '{lam: 1}' is not a valid JSON"),
    (["longform", "--model", "{tiny}", "--n", "1", "--methods", "rome"], "unknown method 'rome'"),
])
def test_cli_bad_input_is_one_clear_error_line_and_exit_2(tmp_path, tiny_folder, capsys, argv, message):
    """Bad command-line input ends with exit status 2 and one ``error:`` message that names the
    option or field and the value given (argparse's own for malformed options), no traceback, and
    no model edited: the checks run before any edit."""
    missing = str(tmp_path / "no-such-file.json")
    argv = [a.replace("{tiny}", str(tiny_folder)).replace("{missing}", missing) for a in argv]
    message = message.replace("{missing}", missing)
    out = tmp_path / "out"
    try:
        code = cli.main(argv + ["--out", str(out), "--quiet"])
    except SystemExit as exc:                       # argparse's refusals exit 2 themselves
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err, err
    assert not list(out.glob("*/progress.json")) and not (out / "rows.jsonl").exists()
