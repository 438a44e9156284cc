"""The recorded-run section of results/sequential/README.md is the one ``scripts/recorded_status.py`` computes from the
committed ``results/sequential/`` files: a number there cannot drift from the evidence."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("recorded_status", ROOT / "scripts" / "recorded_status.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_status_section_matches_the_committed_results():
    mod = _script()
    readme = (ROOT / "results" / "sequential" / "README.md").read_text()
    section = readme.split(mod.START, 1)[1].split(mod.END, 1)[0].strip()
    assert section == mod.status(ROOT / "results" / "sequential").strip(), (
        "results/sequential/README.md's recorded-run section is stale: run `python scripts/recorded_status.py --write`")


def test_readme_headline_rows_match_the_committed_results():
    mod = _script()
    readme = (ROOT / "README.md").read_text()
    section = readme.split(mod.HEAD_START, 1)[1].split(mod.HEAD_END, 1)[0].strip()
    want = mod.headline(ROOT / "results").strip()
    assert want.count("\n| `") >= 8          # a headline row per decided group, at least
    assert section == want, "README's headline rows are stale: run `python scripts/recorded_status.py --write`"
    assert mod.FIGURE.exists()


def test_comparison_cells_carry_value_interval_and_verdict():
    mod = _script()
    cell = mod._claim_cell({"ours": -1.16, "interval": [-2.12, -0.18], "verdict": "disagrees"}, 1)
    assert cell == "-1.2 [-2.1, -0.2] **disagrees**"
    assert mod._claim_cell({"ours": None, "interval": None, "verdict": "inconclusive"}, 1) == "—"
    assert mod._claim_cell(None, 1) == "—"
