"""Shared pieces of the notebook tests: where the notebooks live and one way to execute them."""
from pathlib import Path

import pytest

NB_DIR = Path(__file__).resolve().parents[2] / "notebooks"


@pytest.fixture(scope="session")
def nb_out(tmp_path_factory):
    """One output folder for the whole session: ``<nb_out>/<stem>/`` holds each executed notebook."""
    return tmp_path_factory.mktemp("notebooks")


def execute_notebook(stem: str, out_dir: Path, **params) -> dict:
    """Execute notebooks/<stem>.ipynb with its CI defaults (plus ``params``); return its metrics.json."""
    from bluebook.experiments.notebooks import run_notebook
    return run_notebook(NB_DIR / f"{stem}.ipynb", out_dir, parameters=params, timeout=1800)


@pytest.fixture(scope="session")
def run_nb():
    """``run_nb(stem, out_dir, **params) -> metrics``: the notebook runner shared by every notebook test."""
    return execute_notebook
