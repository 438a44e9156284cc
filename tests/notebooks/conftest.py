import json
from pathlib import Path

import pytest

NB_DIR = Path(__file__).resolve().parents[2] / "notebooks"


@pytest.fixture(scope="session")
def nb_out(tmp_path_factory):
    return tmp_path_factory.mktemp("notebooks")


def run_nb(stem: str, out_dir: Path, **params) -> dict:
    """Execute notebooks/<stem>.ipynb with its CI defaults (plus ``params``); return metrics.json."""
    from bluebook.notebooks import run_notebook
    return run_notebook(NB_DIR / f"{stem}.ipynb", out_dir, parameters=params, timeout=1800)
