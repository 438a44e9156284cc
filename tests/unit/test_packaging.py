"""pyproject.toml and environment.yml name the same packages; the Makefile and CI follow the README."""
import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _name(spec: str) -> str:
    return re.split(r"[<>=!~ \[;]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_matches_pyproject():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = set(py["dependencies"])
    for extra in py["optional-dependencies"].values():
        deps |= set(extra)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    pip = [p for p in pip if not p.startswith("-e")]
    assert {_name(d) for d in deps} == {_name(p) for p in pip}
    # same version constraints too
    assert {d.replace(" ", "") for d in deps} == {p.replace(" ", "") for p in pip}


def test_torch_is_pinned_below_a_cuda_pull():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_spec = next(d for d in py["dependencies"] if _name(d) == "torch")
    assert "<" in torch_spec
    assert "torch==2.13.0" in (ROOT / "Makefile").read_text()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make run" in readme
    assert re.search(r"^make test\b", ci, re.M)
