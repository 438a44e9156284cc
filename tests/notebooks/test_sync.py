"""The percent-format ``notebooks/NN_*.py`` files are the notebooks' source of truth; each is paired
with the ``.ipynb`` next to it (``notebooks/jupytext.toml``). These tests fail when the two drift
apart: run ``make sync`` after editing a ``.py`` in a text editor (JupyterLab syncs on save)."""
from pathlib import Path

import jupytext
import pytest
from jupytext.config import find_jupytext_configuration_file, load_jupytext_configuration_file

NB_DIR = Path(__file__).resolve().parents[2] / "notebooks"

SOURCES = sorted(NB_DIR.glob("[0-9][0-9]_*.py"))
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))


def _cells(nb):
    """What must agree between the pair: each cell's type, source text and tags (the papermill
    ``parameters`` tag among them)."""
    return [(c.cell_type, c.source, list(c.metadata.get("tags", []))) for c in nb.cells]


def test_every_notebook_has_its_source_and_vice_versa():
    assert SOURCES, "no notebooks/NN_*.py sources found"
    py, ipynb = {p.stem for p in SOURCES}, {p.stem for p in NOTEBOOKS}
    assert py - ipynb == set(), f"sources without a paired .ipynb (run `make sync`): {sorted(py - ipynb)}"
    assert ipynb - py == set(), f"notebooks without a .py source: {sorted(ipynb - py)}"


def test_pairing_is_configured():
    config_file = find_jupytext_configuration_file(str(NB_DIR))
    assert config_file is not None, "no jupytext configuration found for notebooks/"
    formats = ",".join(load_jupytext_configuration_file(config_file).formats)
    assert "ipynb" in formats and "py:percent" in formats, f"{config_file}: formats = {formats!r}"


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_notebook_matches_its_source(src):
    ipynb = src.with_suffix(".ipynb")
    assert ipynb.exists(), f"{src.name} has no paired {ipynb.name} (run `make sync`)"
    text_nb = jupytext.read(src)
    assert text_nb.metadata.get("jupytext", {}).get("text_representation", {}).get("format_name") == "percent", \
        f"{src.name}: not in jupytext percent format"
    nb = jupytext.read(ipynb)
    a, b = _cells(text_nb), _cells(nb)
    assert len(a) == len(b), f"{src.name} has {len(a)} cells, {ipynb.name} {len(b)} (run `make sync`)"
    for i, (x, y) in enumerate(zip(a, b)):
        assert x == y, f"cell {i} differs between {src.name} and {ipynb.name} (run `make sync`):\n{x}\n---\n{y}"
    for name, book in ((src.name, text_nb), (ipynb.name, nb)):
        assert book.metadata.get("kernelspec", {}).get("name") == "python3", f"{name}: kernelspec python3 missing"
