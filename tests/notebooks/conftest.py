"""Shared pieces of the notebook tests: where the notebooks live and one way to execute them."""
import json
from pathlib import Path

import pytest

NB_DIR = Path(__file__).resolve().parents[2] / "notebooks"


@pytest.fixture(scope="session")
def nb_out(tmp_path_factory):
    """One output folder for the whole session: ``<nb_out>/<stem>/`` holds each executed notebook."""
    return tmp_path_factory.mktemp("notebooks")


def execute_notebook(stem: str, out_dir: Path, **params) -> dict:
    """Execute notebooks/<stem>.ipynb with its CI defaults (plus ``params``), check what a reader
    sees in it (:func:`check_reader_view`) and return its metrics.json."""
    from bluebook.experiments.notebooks import run_notebook
    metrics = run_notebook(NB_DIR / f"{stem}.ipynb", out_dir, parameters=params, timeout=1800)
    check_reader_view(Path(out_dir) / stem / f"{stem}.ipynb")
    if stem[:2] in CLAIM_NOTEBOOKS:
        check_claim_record(stem, metrics)
    return metrics


#: the notebooks that test claims of the paper and record them in metrics.json
CLAIM_NOTEBOOKS = ("02", "03", "04", "05", "06", "07", "08", "09", "10", "11")


def check_claim_record(stem: str, metrics: dict) -> None:
    """``metrics["claims"]`` has the documented shape, every verdict follows from its interval where
    it has one and was decided from it, and small live samples say so."""
    from bluebook.metrics.claims import SMALL_SAMPLE, check_claims

    assert "claims" in metrics, f"{stem}: metrics.json has no claims"
    check_claims(metrics["claims"])
    for name, c in metrics["claims"].items():
        iv = c["interval"]
        if iv is not None and c["ours"] is not None:
            assert iv[0] - 1e-6 <= c["ours"] <= iv[1] + 1e-6, f"{stem}:{name}: {c['ours']} outside {iv}"
        if c["evidence"] == "live" and c["n"] is not None and c["n"] < SMALL_SAMPLE and c["interval"] is not None:
            assert "small live sample" in c["note"], f"{stem}:{name}: n={c['n']} but not labelled small"
        # the two tiers: a recorded verdict decides only where the live run cannot (inconclusive, or a
        # small sample beside a larger recorded one), and then the note says so
        lv, rec = c.get("live"), c.get("recorded")
        if lv is not None and rec is not None and rec.get("ours") is not None:
            cannot = lv["verdict"] == "inconclusive" or (
                (lv["n"] or 0) < SMALL_SAMPLE and (rec["n"] or 0) > (lv["n"] or 0))
            want = rec if cannot else lv
            assert (c["verdict"], c["evidence"]) == (want["verdict"], want["evidence"]), f"{stem}:{name}"
            if cannot:
                assert "verdict from the recorded" in c["note"], f"{stem}:{name}: {c['note']!r}"


def live_claims(metrics: dict) -> dict:
    """Each claim as the live run measured it (the claim itself where no recorded tier was combined)."""
    return {k: c["live"] if c.get("live") is not None else c for k, c in metrics["claims"].items()}


def check_reader_view(executed: Path) -> None:
    """Every figure the notebook saved is shown inline exactly once (one PNG output per file under
    ``figures/``, none as a ``<Figure size ...>`` text), and no warning, progress bar or empty block
    was written to stderr."""
    nb = json.loads(executed.read_text())
    images, problems = 0, []
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            images += "image/png" in data
            text = "".join(data.get("text/plain", [])) + "".join(out.get("text", []))
            if "<Figure size" in text:
                problems.append(f"cell {i}: a figure printed as text")
            if out.get("name") == "stderr":
                problems.append(f"cell {i}: stderr {text.strip()[:120]!r}")
    saved = sorted((executed.parent / "figures").glob("*.png"))
    assert images == len(saved), f"{executed.name}: {images} inline images for {len(saved)} saved figures"
    assert not problems, f"{executed.name}: " + "; ".join(problems)


@pytest.fixture(scope="session")
def live_of():
    """``live_of(metrics) -> {name: claim}``: the live run's own claims, whatever tier decided them."""
    return live_claims


@pytest.fixture(scope="session")
def run_nb():
    """``run_nb(stem, out_dir, **params) -> metrics``: the notebook runner shared by every notebook test."""
    return execute_notebook
