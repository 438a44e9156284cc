"""Every notebook: committed without outputs, a tagged literal parameters cell, imports only public code."""
import ast
import json
from pathlib import Path

import pytest

NB_DIR = Path(__file__).resolve().parents[2] / "notebooks"

NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 9


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_and_parameterised(nb):
    data = json.loads(nb.read_text())
    cells = data["cells"]
    assert cells[0]["cell_type"] == "markdown"
    for c in cells:
        if c["cell_type"] == "code":
            assert not c.get("outputs"), f"{nb.name}: committed with outputs"
            assert c.get("execution_count") is None, f"{nb.name}: committed with execution counts"
    params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{nb.name}: needs exactly one cell tagged 'parameters'"
    tree = ast.parse("".join(params[0]["source"]))
    names = set()
    for node in tree.body:
        assert isinstance(node, ast.Assign), f"{nb.name}: parameters cell must hold assignments only"
        ast.literal_eval(node.value)            # literals only
        names |= {t.id for t in node.targets}
    assert {"seed", "device", "output_dir"} <= names, f"{nb.name}: parameters missing seed/device/output_dir"
    src = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    for bad in ("sys.path", "%cd", "os.chdir", "autoreload", "../shared", ".cuda()"):
        assert bad not in src, f"{nb.name}: contains {bad!r}"
    full = NB_DIR / "params" / "full" / f"{nb.stem}.yaml"
    assert full.exists(), f"{nb.name}: missing full-profile params {full}"
