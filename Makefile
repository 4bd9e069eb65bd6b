# Two entry points: `make quickstart` (the main job) and `make test` (the test suite).
# Both create .venv on first use and install rtmpc into it (editable).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Torch, ONNX Runtime and Numba each get this many threads unless told otherwise.
export RTMPC_THREADS ?= 2

.PHONY: quickstart test lint install-train install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-train: setup.py pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[train]'
	touch $@

$(VENV)/.installed-test: setup.py pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[train,test]'
	touch $@ $(VENV)/.installed-train

install-train: $(VENV)/.installed-train
install-test: $(VENV)/.installed-test

quickstart: install-train
	$(BIN)/rtmpc quickstart

lint: install-test
	$(BIN)/ruff check .

test: install-test lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o \( -name "*.nbi" -o -name "*.nbc" \) -exec rm -f {} +
