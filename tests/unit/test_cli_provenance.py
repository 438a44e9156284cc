"""The provenance every recording command (``replicate``, ``longform``) appends to
``<out>/invocations.jsonl``: one start and one end line per invocation, with the status the
invocation really ended with, and the caller's SIGTERM handler back afterwards."""
import json
import os
import signal

import pytest

from bluebook.experiments.cli import _recorded_invocation


def _lines(out):
    return [json.loads(x) for x in (out / "invocations.jsonl").read_text().splitlines() if x.strip()]


def test_a_finished_invocation_records_its_exit_code_and_wall_time(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["bluebook", "replicate", "--n", "3"])
    with _recorded_invocation(tmp_path) as outcome:
        outcome["status"] = "0"
    start, end = _lines(tmp_path)
    assert start["event"] == "start" and end["event"] == "end" and start["pid"] == end["pid"] == os.getpid()
    assert start["command"] == "python -m bluebook replicate --n 3" and "commit" in start and "machine" in start
    assert end["status"] == "0" and end["wall_s"] >= 0


def test_a_failure_records_error_and_a_second_invocation_appends(tmp_path):
    with pytest.raises(ValueError, match="bad"):
        with _recorded_invocation(tmp_path):
            raise ValueError("bad")
    with _recorded_invocation(tmp_path) as outcome:
        outcome["status"] = "2"
    assert [(e["event"], e.get("status")) for e in _lines(tmp_path)] == [
        ("start", None), ("end", "error"), ("start", None), ("end", "2")]


def test_sigterm_inside_is_recorded_as_a_stop_and_the_callers_handler_comes_back(tmp_path):
    seen = []
    mine = signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    try:
        with pytest.raises(SystemExit) as exc:
            with _recorded_invocation(tmp_path):
                os.kill(os.getpid(), signal.SIGTERM)
        assert exc.value.code == 128 + signal.SIGTERM and not seen       # not the caller's handler
        assert _lines(tmp_path)[-1]["status"] == f"stopped (exit {128 + signal.SIGTERM})"
        os.kill(os.getpid(), signal.SIGTERM)                               # the caller's handler again
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, mine)


def test_ctrl_c_is_recorded_as_interrupted(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with _recorded_invocation(tmp_path):
            raise KeyboardInterrupt
    assert _lines(tmp_path)[-1]["status"] == "stopped (interrupted)"


def test_read_jsonl_ignores_only_an_append_cut_short_at_the_end(tmp_path):
    """What every reader of these logs uses (``load_run``, ``export_run``, the long-form readers):
    a process killed inside its one ``write`` leaves a last line without newline, which is not a
    record; a damaged line before the end is reported, never skipped."""
    from bluebook.runs import append_jsonl, read_jsonl
    f = tmp_path / "invocations.jsonl"
    assert read_jsonl(f) == []
    append_jsonl(f, {"pid": 1, "event": "start"})
    append_jsonl(f, {"pid": 1, "event": "end"})
    with open(f, "a") as h:
        h.write('{"pid": 2, "ev')
    assert read_jsonl(f) == [{"pid": 1, "event": "start"}, {"pid": 1, "event": "end"}]
    f.write_text('{"pid": 1}\n{"pid": \n{"pid": 3}\n')
    with pytest.raises(ValueError, match=r"invocations.jsonl: line 2"):
        read_jsonl(f)


def test_a_run_folder_with_a_cut_short_log_still_loads_and_exports(tmp_path):
    import shutil
    from pathlib import Path

    from bluebook.experiments.curves import export_run, load_run
    src = tmp_path / "run"
    shutil.copytree(Path(__file__).resolve().parents[2] / "results" / "sequential" / "zsre_n500_b100_equal_total", src)
    whole = [json.loads(x) for x in (src / "invocations.jsonl").read_text().splitlines() if x.strip()]
    with open(src / "invocations.jsonl", "a") as h:
        h.write('{"pid": 5, "event": "st')
    assert load_run(src).invocations == whole
    export_run(src, tmp_path / "copy")
    assert len((tmp_path / "copy" / "invocations.jsonl").read_text().splitlines()) == len(whole)
