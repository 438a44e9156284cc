"""The results report (outputs/README.md): claims table first, rounded numbers, figures in the
order each notebook saved them, HTML exports linked."""
import os

import nbformat

from bluebook.experiments.notebooks import _fmt, export_html, write_report
from bluebook.metrics.claims import paired_claim, threshold_claim


def test_fmt_rounds_like_a_table():
    assert _fmt(0.123456789) == "0.123"
    assert _fmt(12.3456) == "12.35"
    assert _fmt(605.987) == "606.0"
    assert _fmt(3.2e-5) == "3.2e-05"
    assert _fmt([0.11111, 2.22222]) == "[0.111, 2.22]"
    assert _fmt(None) == "—" and _fmt(7) == "7" and _fmt(True) == "True"


def test_report_opens_with_the_claims_and_keeps_figure_order(tmp_path):
    out = tmp_path / "outputs"
    for stem, names in (("02_locating", ["zeta", "alpha"]), ("07_replication", ["bars"])):
        figs = out / stem / "figures"
        figs.mkdir(parents=True)
        for i, n in enumerate(names):
            f = figs / f"{n}.png"
            f.write_bytes(b"png")
            os.utime(f, ns=(10**18 + i, 10**18 + i))          # saved in this order
    index = {
        "02_locating": {"seconds": 61.2, "metrics": {"claims": {
            "block": threshold_claim("block | effect > 0", [0.31234, 0.2, 0.25] * 20, 0.0)}}},
        "07_replication": {"seconds": 300.0, "metrics": {"claims": {
            "cf:memit_blue>memit:efficacy": paired_claim("BLUE > base", [1, 0, 1, 1], [0, 0, 1, 0], scale=100.0)}}},
    }
    text = write_report(out, index).read_text()
    head = text.split("## Notebooks")[0]
    assert "## Scorecard" in head
    assert "2 distinct claims, one verdict each: 1 agrees, 0 disagrees, 1 inconclusive" in head
    rows = [line for line in head.splitlines() if line.startswith("| `")]
    assert len(rows) == 3                          # the decided claim twice (headline, group), the other once
    assert rows[0].startswith("| `block` | block \\| effect > 0 | 0.254 [")      # rounded, pipe escaped
    assert "**agrees**" in rows[0] and "**inconclusive**" in rows[2] and "small live sample (n=4)" in rows[2]
    assert "Δ +" in rows[2]                        # a paired difference is labelled as one
    # one figure per group, the first its notebooks drew
    assert head.index("## The key–value view and locating") < head.index("02_locating/figures/zeta.png")
    body = text.split("## Notebooks")[1]
    assert body.index("figures/zeta.png") < body.index("figures/alpha.png") < body.index("figures/bars.png")
    assert "[notebook](02_locating/02_locating.ipynb)" in body and "HTML" not in body


def test_export_html_writes_the_outputs(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(41 + 1)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="42\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# Title here"), cell]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, str(path))
    html = export_html(path).read_text()
    assert "Title here" in html and "42" in html and html.lstrip().lower().startswith("<!doctype html")


def test_recorded_claims_from_a_full_profile_run(tmp_path):
    import json

    from bluebook.experiments.notebooks import recorded_claims
    from bluebook.metrics.claims import check_claims, decide

    assert recorded_claims("04_residual_distribution", tmp_path) == {}      # nothing committed: no tier
    folder = tmp_path / "04_residual_distribution"
    folder.mkdir()
    live = threshold_claim("s < 0.1", [0.01, 0.02, 0.05] * 30, 0.1, direction=-1)
    small = threshold_claim("x", [1, 0, 1], 0.5)
    decided = decide(small, None)
    (folder / "metrics.json").write_text(json.dumps({"claims": {"a": live, "b": decided}}))
    (folder / "provenance.json").write_text(json.dumps({
        "profile": "full", "started": "2026-12-01 10:00:00 UTC", "commit": "0123456789abcdef", "wall_s": 3600.0,
        "machine": {"cores": 2, "cpu": "x86_64", "cuda": None}}))
    got = recorded_claims("04_residual_distribution", tmp_path)
    check_claims(got)
    assert {c["evidence"] for c in got.values()} == {"recorded"}
    assert got["a"]["ours"] == live["ours"] and got["a"]["interval"] == live["interval"] and got["a"]["n"] == 90
    assert got["a"]["note"].startswith("recorded: full profile, 2026-12-01 10:00:00 UTC, commit 0123456789")
    # a small run stays labelled as small, but no longer as live
    assert "live" not in got["b"] and "small sample (n=3)" in got["b"]["note"]
    assert "small live sample" not in got["b"]["note"] and "small sample" not in got["a"]["note"]
    # the overrides a run was recorded with are named in every note
    prov = json.loads((folder / "provenance.json").read_text())
    (folder / "provenance.json").write_text(json.dumps({**prov, "parameters": {"n_requests": 50}}))
    got = recorded_claims("04_residual_distribution", tmp_path)
    assert got["a"]["note"].startswith("recorded: full profile with n_requests=50, 2026-12-01 10:00:00 UTC")


def test_profile_parameters_are_the_profile_file_then_the_overrides():
    """What a recorded run was really given: a full profile keeps every value of its file that an
    override does not replace (06's full profile edits 2,000 records unless told otherwise)."""
    from pathlib import Path

    import pytest
    import yaml

    from bluebook.experiments.notebooks import profile_parameters

    nb = Path(__file__).resolve().parents[2] / "notebooks" / "06_blue.ipynb"
    full = yaml.safe_load((nb.parent / "params" / "full" / "06_blue.yaml").read_text())
    got = profile_parameters(nb, "full", {"n_steps_requests": 50, "methods": ["memit"]})
    assert got["n_edits"] == full["n_edits"] and got["batch_size"] == full["batch_size"]
    assert got["n_steps_requests"] == 50 and got["methods"] == ["memit"]
    assert profile_parameters(nb, "ci", {"n_edits": 4}) == {"n_edits": 4}
    with pytest.raises(ValueError, match="profile"):
        profile_parameters(nb, "gpu")
